//! Arguments in JSON and results as JSON (`wasmpool::json`, `TaskComponent::call_json`,
//! `TaskValue::to_json`): every type of the fixture's `types` interface goes through a real
//! guest and back, and a value that does not fit names the path of its bad part.

use std::sync::OnceLock;

use serde_json::{Value, json};
use wasmpool::json::{JsonError, MAX_EXACT_INTEGER, from_json, to_json};
use wasmpool::{CallError, Executor, TaskError, TaskValue, ThreadPoolExecutor, Val};
use wasmtime::component::Type;

use crate::common::{SOON, fixtures};

fn pool() -> &'static ThreadPoolExecutor {
    static POOL: OnceLock<ThreadPoolExecutor> = OnceLock::new();
    POOL.get_or_init(|| ThreadPoolExecutor::new(2).expect("pool"))
}

/// Calls `function` of the fixtures with `args` in JSON; its result.
fn run(function: &str, args: &Value) -> Result<TaskValue, TaskError> {
    let call = fixtures()
        .call_json(function, args)
        .unwrap_or_else(|e| panic!("{function} {args}: {e}"));
    pool()
        .submit(call)
        .expect("submit")
        .result_timeout(SOON)
        .expect("finished soon")
}

/// The error of calling `function` with `args`.
fn refused(function: &str, args: &Value) -> CallError {
    match fixtures().call_json(function, args) {
        Ok(call) => panic!("{function} {args} accepted: {call:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_type_of_the_types_interface_round_trips_through_the_guest() {
    let point = json!({"x": 1, "y": -2});
    let cases = [
        ("types#echo-point", json!([point]), point.clone()),
        (
            "types#echo-shape",
            json!([{"circle": 1.5}]),
            json!({"circle": 1.5}),
        ),
        (
            "types#echo-shape",
            json!([{"rect": {"x": 3, "y": 4}}]),
            json!({"rect": {"x": 3, "y": 4}}),
        ),
        ("types#echo-shape", json!(["empty"]), json!("empty")),
        // A case without a payload is accepted in the tagged form too.
        ("types#echo-shape", json!([{"empty": null}]), json!("empty")),
        (
            "types#echo-shape",
            json!([{"circle": "inf"}]),
            json!({"circle": "inf"}),
        ),
        (
            "types#echo-shape",
            json!([{"circle": "-inf"}]),
            json!({"circle": "-inf"}),
        ),
        (
            "types#echo-shape",
            json!([{"circle": "nan"}]),
            json!({"circle": "nan"}),
        ),
        ("types#echo-color", json!(["green"]), json!("green")),
        (
            "types#echo-perms",
            json!([["read", "exec"]]),
            json!(["read", "exec"]),
        ),
        ("types#echo-perms", json!([[]]), json!([])),
        ("types#echo-option", json!(["x"]), json!("x")),
        ("types#echo-option", json!([null]), json!(null)),
        (
            "types#echo-list",
            json!([[1, 2, u32::MAX]]),
            json!([1, 2, u32::MAX]),
        ),
        ("types#echo-list", json!([[]]), json!([])),
        // Integral numbers in other spellings are integers.
        ("types#echo-list", json!([[3.0, 1e3]]), json!([3, 1000])),
        (
            "types#echo-tuple",
            json!([["a\"b", 255, true]]),
            json!(["a\"b", 255, true]),
        ),
        ("types#echo-char", json!(["☃"]), json!("☃")),
        // A top-level `ok` is the task's value (an `err` fails the task: below).
        ("types#echo-result", json!([{"ok": 7}]), json!(7)),
        (
            "types#sum-points",
            json!([[{"x": 1, "y": 2}, {"x": 10, "y": 20}]]),
            json!({"x": 11, "y": 22}),
        ),
        ("types#sum-points", json!([[]]), json!({"x": 0, "y": 0})),
        ("greet", json!(["ann"]), json!("hello, ann")),
        ("noop", json!([]), Value::Null),
    ];
    for (function, args, expected) in cases {
        let value = run(function, &args).unwrap_or_else(|e| panic!("{function} {args}: {e}"));
        assert_eq!(value.to_json(), expected, "{function} {args}");
    }

    // Every argument kind at once, with s64 on both sides of 2^53: exact numbers up to it,
    // decimal strings beyond.
    let max = MAX_EXACT_INTEGER as i64;
    for (s64_in, s64_out) in [
        (json!(-9), json!(-9)),
        (json!(max), json!(max)),
        (json!(-max), json!(-max)),
        (json!(max + 1), json!((max + 1).to_string())),
        (json!(i64::MIN.to_string()), json!(i64::MIN.to_string())),
        (json!("-12"), json!(-12)),
    ] {
        let args = json!([
            {"x": 1, "y": 2},
            {"rect": {"x": 0, "y": 0}},
            "blue",
            ["write"],
            ["a", "b"],
            [7, "z", s64_in]
        ]);
        let mut expected = args.clone();
        expected[5][2] = s64_out;
        let value = run("types#everything", &args).expect("everything");
        assert_eq!(value.to_json(), expected, "{args}");
        // The JSON result is the WAVE result, typed.
        let wave = value.to_wave();
        assert!(wave.starts_with("({x: 1, y: 2}, rect({x: 0, y: 0}), blue, {write}, some("));
    }
}

#[test]
fn a_guest_err_fails_the_task_and_u64s_beyond_2_53_are_strings() {
    let err = run("types#echo-result", &json!([{"err": "nope"}])).unwrap_err();
    assert_eq!(err.to_string(), "nope");
    // u64 arguments and results: exact numbers and decimal strings alike.
    assert_eq!(run("fib", &json!([20])).unwrap().to_json(), json!(6765));
    assert_eq!(run("sleep-ms", &json!(["0"])).unwrap().to_json(), json!(0));
    let max = MAX_EXACT_INTEGER;
    assert_eq!(to_json(&Val::U64(max)), json!(max));
    assert_eq!(to_json(&Val::U64(max + 1)), json!((max + 1).to_string()));
}

#[test]
fn arguments_may_be_named_and_options_left_out() {
    let value = run("math#add", &json!({"b": 2, "a": 40})).unwrap();
    assert_eq!(value.to_json(), json!(42));
    // `o: option<list<string>>` left out is none.
    let named = json!({
        "p": {"x": 1, "y": 2}, "s": "empty", "c": "red", "f": [], "t": [0, "a", 0]
    });
    let value = run("types#everything", &named).unwrap();
    assert_eq!(value.to_json()[4], Value::Null);
    assert_eq!(
        run("types#echo-option", &json!({})).unwrap().to_json(),
        Value::Null
    );
}

#[test]
fn a_value_that_does_not_fit_names_the_path_of_its_bad_part() {
    let cases = [
        (
            "types#sum-points",
            json!([[{"x": 1, "y": 2}, {"x": 1, "y": 2}, {"x": "a", "y": 2}]]),
            ".ps[2].x: expected s32, got \"a\"",
        ),
        (
            "types#sum-points",
            json!({"ps": [{"x": 1}]}),
            ".ps[0]: missing field `y`",
        ),
        (
            "types#echo-point",
            json!([{"x": 1, "y": 2, "z": 3}]),
            ".p: no field `z`; expected: x, y",
        ),
        (
            "math#add",
            json!({"a": 1, "c": 2}),
            "no parameter `c`; expected: a, b",
        ),
        ("math#add", json!({"a": 1}), "missing parameter `b`"),
        ("math#add", json!(7), "expected an array of the arguments"),
        (
            "math#add",
            json!([1, 2.5]),
            ".b: expected s32, got 2.5 (not an integer)",
        ),
        (
            "math#add",
            json!([1, 2147483648u64]),
            ".b: expected s32, got 2147483648 (out of range)",
        ),
        (
            "types#echo-list",
            json!([[1, -1]]),
            ".l[1]: expected u32, got -1 (out of range)",
        ),
        (
            "types#echo-list",
            json!([["1"]]),
            ".l[0]: expected u32, got \"1\"",
        ),
        (
            "sleep-ms",
            json!([1e19]),
            ".ms: expected u64, got 1e+19 (not exact as a JSON number; write it in full or as a string)",
        ),
        (
            "sleep-ms",
            json!([1e300]),
            ".ms: expected u64, got 1e+300 (out of range)",
        ),
        (
            "sleep-ms",
            json!(["18446744073709551616"]),
            "(out of range)",
        ),
        ("sleep-ms", json!(["12x"]), "(not a decimal integer)"),
        (
            "types#echo-shape",
            json!([{"circle": "big"}]),
            ".s.circle: expected f64, got \"big\"",
        ),
        (
            "types#echo-shape",
            json!([{"square": 1}]),
            ".s: no case `square`; expected one of: circle, rect, empty",
        ),
        (
            "types#echo-shape",
            json!(["circle"]),
            ".s: case `circle` needs a f64 payload",
        ),
        (
            "types#echo-shape",
            json!([{"empty": 1}]),
            ".s.empty: case `empty` has no payload, got 1",
        ),
        (
            "types#echo-shape",
            json!([{"circle": 1, "empty": null}]),
            ".s: expected variant",
        ),
        ("types#echo-color", json!(["mauve"]), ".c: no case `mauve`"),
        (
            "types#echo-perms",
            json!([["read", "read"]]),
            ".p[1]: flag `read` given twice",
        ),
        ("types#echo-perms", json!([["fly"]]), ".p[0]: no case `fly`"),
        (
            "types#echo-char",
            json!(["ab"]),
            ".c: expected char, got \"ab\"",
        ),
        (
            "types#echo-char",
            json!([""]),
            ".c: expected char, got \"\"",
        ),
        (
            "types#echo-tuple",
            json!([["a", 1]]),
            ".t: expected tuple<string, u8, bool>",
        ),
        (
            "types#echo-tuple",
            json!([["a", 256, true]]),
            ".t[1]: expected u8, got 256",
        ),
        (
            "types#echo-result",
            json!([{"maybe": 1}]),
            ".r: expected {\"ok\": …} or {\"err\": …}",
        ),
        (
            "types#echo-result",
            json!([{"err": 1}]),
            ".r.err: expected string, got 1",
        ),
        (
            "types#echo-option",
            json!([1]),
            ".o: expected string, got 1",
        ),
    ];
    for (function, args, needle) in cases {
        let err = refused(function, &args);
        let CallError::Json { error, .. } = &err else {
            panic!("{function} {args}: not a JSON error: {err:?}");
        };
        let text = error.to_string();
        assert!(text.contains(needle), "{function} {args}: {text}");
        assert!(
            err.to_string().starts_with("invalid JSON arguments for `"),
            "{err}"
        );
    }
    // The wrong number of arguments in an array is an arity error, as for other calls.
    let err = refused("math#add", &json!([1]));
    assert!(
        matches!(
            err,
            CallError::Arity {
                expected: 2,
                given: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn floats_keep_their_shortest_form_and_non_finite_values_are_strings() {
    assert_eq!(to_json(&Val::Float32(0.1)), json!(0.1));
    assert_eq!(to_json(&Val::Float64(f64::NAN)), json!("nan"));
    assert_eq!(to_json(&Val::Float32(f32::NEG_INFINITY)), json!("-inf"));
    assert_eq!(
        from_json(&json!(0.1), &Type::Float32),
        Ok(Val::Float32(0.1))
    );
    assert_eq!(
        from_json(&json!("inf"), &Type::Float32),
        Ok(Val::Float32(f32::INFINITY))
    );
    let err = from_json(&json!(1e300), &Type::Float32).unwrap_err();
    assert_eq!(err.to_string(), "expected f32, got 1e+300 (out of range)");
    assert!(from_json(&json!("Infinity"), &Type::Float64).is_err());
    assert_eq!(
        from_json(&json!(u64::MAX), &Type::U64),
        Ok(Val::U64(u64::MAX))
    );
    assert_eq!(
        from_json(&json!(i64::MIN), &Type::S64),
        Ok(Val::S64(i64::MIN))
    );
    assert_eq!(to_json(&Val::U64(u64::MAX)), json!(u64::MAX.to_string()));
    assert_eq!(
        from_json(&json!(-1), &Type::U8),
        Err(JsonError {
            path: String::new(),
            message: "expected u8, got -1 (out of range)".into()
        })
    );
}

#[test]
fn values_no_fixture_returns_have_a_tagged_form() {
    let some = |v: Val| Val::Option(Some(Box::new(v)));
    // Nested options: `some(none)` and `none` differ.
    assert_eq!(to_json(&some(Val::Option(None))), json!({"some": null}));
    assert_eq!(to_json(&some(some(Val::U8(1)))), json!({"some": 1}));
    assert_eq!(to_json(&Val::Option(None)), Value::Null);
    // Results inside a value keep their tag; a missing payload is null.
    assert_eq!(to_json(&Val::Result(Ok(None))), json!({"ok": null}));
    assert_eq!(
        to_json(&Val::Result(Err(Some(Box::new(Val::String("e".into())))))),
        json!({"err": "e"})
    );
    // Maps: an object for string keys, `[key, value]` pairs otherwise.
    let map = Val::Map(vec![(Val::String("k".into()), Val::U8(1))]);
    assert_eq!(to_json(&map), json!({"k": 1}));
    let map = Val::Map(vec![(Val::U8(1), Val::Bool(true))]);
    assert_eq!(to_json(&map), json!([[1, true]]));
}
