//! Component types: printing them as WIT, and checking a value against one.

use std::fmt::Write;

use wasmtime::component::{Type, Val, types::ComponentFunc};

/// The WIT spelling of a type. Named types (records, variants, ...) have no name at run
/// time, so they are spelled out structurally: `record { x: s32, y: s32 }`.
pub fn wit_type(ty: &Type) -> String {
    let mut out = String::new();
    write_type(&mut out, ty);
    out
}

/// The WIT signature of a function: `func(n: u32) -> f64`.
pub fn wit_signature(func: &ComponentFunc) -> String {
    let mut out = String::from("func(");
    for (i, (name, ty)) in func.params().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{name}: ");
        write_type(&mut out, &ty);
    }
    out.push(')');
    for ty in func.results() {
        out.push_str(" -> ");
        write_type(&mut out, &ty);
    }
    out
}

fn write_list<T>(
    out: &mut String,
    items: impl Iterator<Item = T>,
    mut each: impl FnMut(&mut String, T),
) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        each(out, item);
    }
}

fn write_type(out: &mut String, ty: &Type) {
    match ty {
        Type::Bool => out.push_str("bool"),
        Type::S8 => out.push_str("s8"),
        Type::U8 => out.push_str("u8"),
        Type::S16 => out.push_str("s16"),
        Type::U16 => out.push_str("u16"),
        Type::S32 => out.push_str("s32"),
        Type::U32 => out.push_str("u32"),
        Type::S64 => out.push_str("s64"),
        Type::U64 => out.push_str("u64"),
        Type::Float32 => out.push_str("f32"),
        Type::Float64 => out.push_str("f64"),
        Type::Char => out.push_str("char"),
        Type::String => out.push_str("string"),
        Type::List(l) => {
            out.push_str("list<");
            write_type(out, &l.ty());
            out.push('>');
        }
        Type::FixedLengthList(l) => {
            out.push_str("list<");
            write_type(out, &l.ty());
            let _ = write!(out, ", {}>", l.len());
        }
        Type::Map(m) => {
            out.push_str("map<");
            write_type(out, &m.key());
            out.push_str(", ");
            write_type(out, &m.value());
            out.push('>');
        }
        Type::Record(r) => {
            out.push_str("record { ");
            write_list(out, r.fields(), |out, f| {
                let _ = write!(out, "{}: ", f.name);
                write_type(out, &f.ty);
            });
            out.push_str(" }");
        }
        Type::Tuple(t) => {
            out.push_str("tuple<");
            write_list(out, t.types(), |out, t| write_type(out, &t));
            out.push('>');
        }
        Type::Variant(v) => {
            out.push_str("variant { ");
            write_list(out, v.cases(), |out, c| {
                out.push_str(c.name);
                if let Some(ty) = &c.ty {
                    out.push('(');
                    write_type(out, ty);
                    out.push(')');
                }
            });
            out.push_str(" }");
        }
        Type::Enum(e) => {
            out.push_str("enum { ");
            write_list(out, e.names(), |out, n| out.push_str(n));
            out.push_str(" }");
        }
        Type::Flags(f) => {
            out.push_str("flags { ");
            write_list(out, f.names(), |out, n| out.push_str(n));
            out.push_str(" }");
        }
        Type::Option(o) => {
            out.push_str("option<");
            write_type(out, &o.ty());
            out.push('>');
        }
        Type::Result(r) => {
            out.push_str("result");
            match (r.ok(), r.err()) {
                (None, None) => {}
                (Some(ok), None) => {
                    out.push('<');
                    write_type(out, &ok);
                    out.push('>');
                }
                (ok, Some(err)) => {
                    out.push('<');
                    match ok {
                        Some(ok) => write_type(out, &ok),
                        None => out.push('_'),
                    }
                    out.push_str(", ");
                    write_type(out, &err);
                    out.push('>');
                }
            }
        }
        Type::Own(_) => out.push_str("own<resource>"),
        Type::Borrow(_) => out.push_str("borrow<resource>"),
        Type::Future(_) => out.push_str("future"),
        Type::Stream(_) => out.push_str("stream"),
        Type::ErrorContext => out.push_str("error-context"),
    }
}

/// The short name of a value's type, for messages: `u32`, `string`, `record`, ...
pub(crate) fn val_kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "bool",
        Val::S8(_) => "s8",
        Val::U8(_) => "u8",
        Val::S16(_) => "s16",
        Val::U16(_) => "u16",
        Val::S32(_) => "s32",
        Val::U32(_) => "u32",
        Val::S64(_) => "s64",
        Val::U64(_) => "u64",
        Val::Float32(_) => "f32",
        Val::Float64(_) => "f64",
        Val::Char(_) => "char",
        Val::String(_) => "string",
        Val::List(_) | Val::FixedLengthList(_) => "list",
        Val::Map(_) => "map",
        Val::Record(_) => "record",
        Val::Tuple(_) => "tuple",
        Val::Variant(..) => "variant",
        Val::Enum(_) => "enum",
        Val::Option(_) => "option",
        Val::Result(_) => "result",
        Val::Flags(_) => "flags",
        Val::Resource(_) => "resource",
        Val::Future(_) => "future",
        Val::Stream(_) => "stream",
        Val::ErrorContext(_) => "error-context",
    }
}

/// Checks that `val` is a value of type `ty`; the error says where and what differs.
pub(crate) fn check_val(val: &Val, ty: &Type) -> Result<(), String> {
    let mismatch = || {
        Err(format!(
            "expected {}, found a {} value",
            wit_type(ty),
            val_kind(val)
        ))
    };
    match (val, ty) {
        (Val::Bool(_), Type::Bool)
        | (Val::S8(_), Type::S8)
        | (Val::U8(_), Type::U8)
        | (Val::S16(_), Type::S16)
        | (Val::U16(_), Type::U16)
        | (Val::S32(_), Type::S32)
        | (Val::U32(_), Type::U32)
        | (Val::S64(_), Type::S64)
        | (Val::U64(_), Type::U64)
        | (Val::Float32(_), Type::Float32)
        | (Val::Float64(_), Type::Float64)
        | (Val::Char(_), Type::Char)
        | (Val::String(_), Type::String) => Ok(()),
        (Val::List(items), Type::List(l)) => check_items(items, &l.ty()),
        (Val::FixedLengthList(items), Type::FixedLengthList(l)) => {
            if items.len() != l.len() as usize {
                return Err(format!("expected {} items, found {}", l.len(), items.len()));
            }
            check_items(items, &l.ty())
        }
        (Val::Map(entries), Type::Map(m)) => {
            let (kt, vt) = (m.key(), m.value());
            entries.iter().enumerate().try_for_each(|(i, (k, v))| {
                check_val(k, &kt).map_err(|e| format!("key {i}: {e}"))?;
                check_val(v, &vt).map_err(|e| format!("value {i}: {e}"))
            })
        }
        (Val::Record(fields), Type::Record(r)) => {
            let expected: Vec<_> = r.fields().collect();
            if fields.len() != expected.len() {
                return Err(format!(
                    "expected {} with {} fields, found {}",
                    wit_type(ty),
                    expected.len(),
                    fields.len()
                ));
            }
            for ((name, v), field) in fields.iter().zip(&expected) {
                if name != field.name {
                    return Err(format!("expected field `{}`, found `{name}`", field.name));
                }
                check_val(v, &field.ty).map_err(|e| format!("field `{name}`: {e}"))?;
            }
            Ok(())
        }
        (Val::Tuple(items), Type::Tuple(t)) => {
            let types: Vec<_> = t.types().collect();
            if items.len() != types.len() {
                return Err(format!(
                    "expected a tuple of {}, found {} items",
                    types.len(),
                    items.len()
                ));
            }
            items
                .iter()
                .zip(&types)
                .enumerate()
                .try_for_each(|(i, (v, t))| {
                    check_val(v, t).map_err(|e| format!("tuple item {i}: {e}"))
                })
        }
        (Val::Variant(name, payload), Type::Variant(v)) => {
            let Some(case) = v.cases().find(|c| c.name == name) else {
                return Err(format!("no case `{name}` in {}", wit_type(ty)));
            };
            check_payload(name, payload.as_deref(), case.ty.as_ref())
        }
        (Val::Enum(name), Type::Enum(e)) => {
            if e.names().any(|n| n == name) {
                Ok(())
            } else {
                Err(format!("no case `{name}` in {}", wit_type(ty)))
            }
        }
        (Val::Flags(names), Type::Flags(f)) => {
            let known: Vec<_> = f.names().collect();
            match names.iter().find(|n| !known.contains(&n.as_str())) {
                Some(n) => Err(format!("no flag `{n}` in {}", wit_type(ty))),
                None => Ok(()),
            }
        }
        (Val::Option(inner), Type::Option(o)) => match inner {
            Some(v) => check_val(v, &o.ty()).map_err(|e| format!("some: {e}")),
            None => Ok(()),
        },
        (Val::Result(r), Type::Result(rt)) => match r {
            Ok(v) => check_payload("ok", v.as_deref(), rt.ok().as_ref()),
            Err(v) => check_payload("err", v.as_deref(), rt.err().as_ref()),
        },
        (Val::Resource(_), _) | (Val::Future(_), _) | (Val::Stream(_), _) => Err(format!(
            "a {} cannot be passed to a task (tasks run in fresh instances)",
            val_kind(val)
        )),
        _ => mismatch(),
    }
}

fn check_items(items: &[Val], ty: &Type) -> Result<(), String> {
    items
        .iter()
        .enumerate()
        .try_for_each(|(i, v)| check_val(v, ty).map_err(|e| format!("item {i}: {e}")))
}

fn check_payload(case: &str, payload: Option<&Val>, ty: Option<&Type>) -> Result<(), String> {
    match (payload, ty) {
        (None, None) => Ok(()),
        (Some(v), Some(t)) => check_val(v, t).map_err(|e| format!("{case}: {e}")),
        (None, Some(t)) => Err(format!("case `{case}` needs a {} payload", wit_type(t))),
        (Some(_), None) => Err(format!("case `{case}` has no payload")),
    }
}
