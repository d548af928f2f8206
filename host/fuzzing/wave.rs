//! The `wave_args` fuzz target: WAVE arguments of the fixture component's functions, and
//! its seeds.

use wasmtime::component::{Val, wasm_wave};

use super::{Seed, fixtures};

/// WAVE arguments for one of the fixture component's functions (the first byte picks it),
/// parsed and type-checked as `Call` does for `wasmpool map`. Arguments that parse must
/// have the parameters' types and must survive printing and parsing again unchanged.
/// Returns whether the input got that far (parsed, and passed those checks).
pub fn wave_args(data: &[u8]) -> bool {
    let Some((&pick, text)) = data.split_first() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let component = fixtures();
    let functions = component.functions();
    let function = &functions[usize::from(pick) % functions.len()];
    let name = function.name();
    let Ok(call) = component.call_wave_args(name, text) else {
        return false;
    };
    let types: Vec<_> = function.params().map(|(_, ty)| ty).collect();
    assert_eq!(call.args().len(), types.len(), "arity of {name}({text})");
    for (arg, ty) in call.args().iter().zip(&types) {
        if let Err(e) = crate::types::check_val(arg, ty) {
            panic!("{name}({text}) parsed to an ill-typed argument: {e}");
        }
    }
    let printed = print_args(call.args());
    let reparsed = component
        .call_wave_args(name, &printed)
        .unwrap_or_else(|e| panic!("{name}({text}) printed as ({printed}), which fails: {e}"));
    assert_eq!(
        printed,
        print_args(reparsed.args()),
        "{name}({text}) does not survive printing and parsing"
    );
    true
}

fn print_args(args: &[Val]) -> String {
    let printed: Vec<String> = args
        .iter()
        .map(|v| wasm_wave::to_string(v).expect("a parsed value prints"))
        .collect();
    printed.join(", ")
}

/// Seeds of `wave_args`: WAVE arguments of the fixture's functions, each aimed at its
/// function by name (the first byte is that function's index, as [`wave_args`] picks it).
pub(super) fn wave_seeds() -> Vec<Seed> {
    const ARGS: &[(&str, &str)] = &[
        ("add", "1, 2"),
        ("add", "-7, 2147483647"),
        ("math.mul", "-3, 4"),
        ("fib", "30"),
        ("greet", "\"ann\""),
        ("greet", r#""tab\t, quote\", unicode \u{1f980}""#),
        ("sleep-ms", "18446744073709551615"),
        ("print-lines", "3, \"line\""),
        ("types.echo-point", "{x: 1, y: 2}"),
        ("types.echo-point", "{x: -2147483648, y: 0}"),
        ("types.echo-shape", "circle(1.5)"),
        ("types.echo-shape", "circle(nan)"),
        ("types.echo-shape", "circle(-inf)"),
        ("types.echo-shape", "circle(-1.5e3)"),
        ("types.echo-shape", "rect({x: 3, y: 4})"),
        ("types.echo-shape", "empty"),
        ("types.echo-color", "red"),
        ("types.echo-perms", "{read, write}"),
        ("types.echo-perms", "{}"),
        ("types.echo-option", "some(\"a\")"),
        ("types.echo-option", "none"),
        ("types.echo-list", "[1, 2, 3]"),
        ("types.echo-list", "[]"),
        ("types.echo-tuple", "(\"a\", 1, true)"),
        ("types.echo-char", "'c'"),
        ("types.echo-char", "'🦀'"),
        ("types.echo-result", "ok(1)"),
        ("types.echo-result", "err(\"e\")"),
        ("types.sum-points", "[{x: 1, y: 2}, {x: -1, y: 0}]"),
        (
            "types.everything",
            "{x: 1, y: -2}, rect({x: 3, y: 4}), blue, {read, exec}, some([\"a\", \"\"]), (7, '🦀', -1099511627776)",
        ),
        (
            "types.everything",
            "{x: 0, y: 0}, empty, green, {}, none, (0, 'x', 0)",
        ),
    ];
    let component = fixtures();
    let functions = component.functions();
    ARGS.iter()
        .enumerate()
        .map(|(i, (name, args))| {
            let function = component
                .function(name)
                .unwrap_or_else(|e| panic!("a WAVE seed's function {name}: {e}"));
            let index = functions
                .iter()
                .position(|f| std::ptr::eq(f, function))
                .expect("a function found by name is one of the functions");
            let pick = u8::try_from(index).expect("the fixture has fewer than 256 functions");
            let mut bytes = vec![pick];
            bytes.extend_from_slice(args.as_bytes());
            Seed {
                target: "wave_args",
                name: format!("seed-{i}"),
                bytes,
            }
        })
        .collect()
}
