//! Record fields that WAVE text names but the record type lacks (or names twice).
//!
//! wasm-wave's conversion looks each field of the record type up in the text and ignores
//! every other field written, so `{x: 1, y: 2, z: 3}` would pass as an `{x, y}` record; a
//! typo in an optional field's name (`{nmae: "a"}` for `name: option<string>`) would pass
//! as `none`. This walks the parsed text beside its types after the conversion succeeded
//! (so every node is known to fit its type's shape) and finds such a field.

use std::collections::HashSet;
use std::ops::Range;

use wasmtime::component::Type;
use wasmtime::component::wasm_wave::ast::Node;

/// The first record field in the arguments `params` (the parsed argument tuple of `src`)
/// that their `types` do not have, or that is written twice: its value's span in `src` and
/// what is wrong.
pub(crate) fn stray_field(
    params: &Node,
    types: &[Type],
    src: &str,
) -> Option<(Range<usize>, String)> {
    let args = params.as_tuple().ok()?;
    args.zip(types).find_map(|(node, ty)| check(node, ty, src))
}

fn check(node: &Node, ty: &Type, src: &str) -> Option<(Range<usize>, String)> {
    match ty {
        Type::Record(record) => {
            let fields = node.as_record(src).ok()?;
            let mut seen = HashSet::new();
            for (name, value) in fields {
                let Some(field) = record.fields().find(|f| f.name == name) else {
                    let known: Vec<&str> = record.fields().map(|f| f.name).collect();
                    let message = format!(
                        "unknown field `{name}` (the record has: {})",
                        known.join(", ")
                    );
                    return Some((value.span(), message));
                };
                if !seen.insert(name) {
                    return Some((value.span(), format!("field `{name}` given twice")));
                }
                if let Some(found) = check(value, &field.ty, src) {
                    return Some(found);
                }
            }
            None
        }
        Type::List(list) => {
            let element = list.ty();
            node.as_list()
                .ok()?
                .find_map(|item| check(item, &element, src))
        }
        Type::Tuple(tuple) => node
            .as_tuple()
            .ok()?
            .zip(tuple.types())
            .find_map(|(item, ty)| check(item, &ty, src)),
        Type::Option(option) => check(node.as_option().ok()??, &option.ty(), src),
        Type::Result(result) => match node.as_result().ok()? {
            Ok(Some(value)) => check(value, &result.ok()?, src),
            Err(Some(value)) => check(value, &result.err()?, src),
            Ok(None) | Err(None) => None,
        },
        Type::Variant(variant) => {
            let (label, payload) = node.as_variant(src).ok()?;
            let case = variant.cases().find(|c| c.name == label)?;
            check(payload?, &case.ty?, src)
        }
        _ => None,
    }
}
