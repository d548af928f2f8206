//! Component values as JSON: converting a JSON value to a [`Val`] guided by the WIT type it
//! must have, and any [`Val`] back to JSON. [`TaskComponent::call_json`] and
//! [`TaskValue::to_json`] are built on these.
//!
//! The mapping (both directions unless said otherwise):
//!
//! | WIT type | JSON |
//! |---|---|
//! | `bool` | `true` / `false` |
//! | `u8` … `u32`, `s8` … `s32` | a number |
//! | `u64`, `s64` | a number; written as a decimal string when beyond ±2^53 (where a JSON number stops being exact in most readers), and a decimal string is accepted too |
//! | `f32`, `f64` | a number; NaN and the infinities are the strings `"nan"`, `"inf"`, `"-inf"` |
//! | `char` | a string of one character |
//! | `string` | a string |
//! | `list<T>`, `tuple<…>` | an array (a tuple's of its exact length) |
//! | `map<K, V>` | an object when every key is a string, else an array of `[key, value]` pairs (both are accepted for string keys) |
//! | `record` | an object of its fields; a field of `option` type may be left out (none); an unknown field is an error |
//! | `variant` | `{"case": payload}`; a case without a payload is the string `"case"` (`{"case": null}` is accepted too) |
//! | `enum` | the case's name, a string |
//! | `flags` | an array of the names of the flags that are set |
//! | `option<T>` | `null` for none, the value for some; `{"some": v}` when `T` is itself an option (so that `some(none)` and `none` differ) |
//! | `result<T, E>` | `{"ok": v}` or `{"err": e}`; `null` stands for a missing payload |
//!
//! Integers are accepted as JSON numbers with an integer value (`3`, `3.0`, `1e3`) that is
//! exact (at most 2^53 unless written in full) and fits the type. Resources, futures and
//! streams cannot be given as JSON; written out, they are a string naming their kind.
//!
//! A JSON value that does not fit is a [`JsonError`] naming the path of the bad part from
//! the value given: `.points[2].x: expected s32, got "a"`.

use serde_json::{Map, Number, Value};
use wasmtime::component::{Type, Val};

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::CallError;
use crate::types::{val_kind, wit_type};
use crate::value::TaskValue;

/// The largest integer magnitude a JSON number carries exactly in every common reader
/// (an IEEE double's 53-bit mantissa): 2^53.
pub const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// How many characters of a bad JSON value an error shows.
const SHOWN: usize = 60;

pub use crate::json_error::JsonError;

/// `json` as a value of type `ty` (see the [module docs](self) for the mapping).
///
/// ```
/// use wasmpool::json::from_json;
/// use wasmtime::component::{Type, Val};
/// let v = from_json(&serde_json::json!("18446744073709551615"), &Type::U64)?;
/// assert_eq!(v, Val::U64(u64::MAX));
/// let err = from_json(&serde_json::json!(-1), &Type::U8).unwrap_err();
/// assert_eq!(err.to_string(), "expected u8, got -1 (out of range)");
/// # Ok::<(), wasmpool::json::JsonError>(())
/// ```
pub fn from_json(json: &Value, ty: &Type) -> Result<Val, JsonError> {
    let expected = || mismatch(&wit_type(ty), json, "");
    Ok(match ty {
        Type::Bool => Val::Bool(json.as_bool().ok_or_else(expected)?),
        Type::S8 => Val::S8(integer(json, ty)?),
        Type::U8 => Val::U8(integer(json, ty)?),
        Type::S16 => Val::S16(integer(json, ty)?),
        Type::U16 => Val::U16(integer(json, ty)?),
        Type::S32 => Val::S32(integer(json, ty)?),
        Type::U32 => Val::U32(integer(json, ty)?),
        Type::S64 => Val::S64(integer(json, ty)?),
        Type::U64 => Val::U64(integer(json, ty)?),
        Type::Float32 => {
            let x = float(json).ok_or_else(expected)?;
            // Narrowing keeps NaN and the infinities; a finite value it makes infinite is
            // out of range.
            let narrow = x as f32;
            if x.is_finite() && !narrow.is_finite() {
                return Err(mismatch("f32", json, " (out of range)"));
            }
            Val::Float32(narrow)
        }
        Type::Float64 => Val::Float64(float(json).ok_or_else(expected)?),
        Type::Char => {
            let text = json.as_str().ok_or_else(expected)?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(expected()),
            }
        }
        Type::String => Val::String(json.as_str().ok_or_else(expected)?.to_string()),
        Type::List(l) => Val::List(items(json.as_array().ok_or_else(expected)?, &l.ty())?),
        Type::FixedLengthList(l) => {
            let array = json.as_array().ok_or_else(expected)?;
            if array.len() != l.len() as usize {
                return Err(JsonError::new(format!(
                    "expected {} items, got {}",
                    l.len(),
                    array.len()
                )));
            }
            Val::FixedLengthList(items(array, &l.ty())?)
        }
        Type::Map(m) => Val::Map(map_entries(json, &m.key(), &m.value()).ok_or_else(expected)??),
        Type::Record(r) => {
            let object = json.as_object().ok_or_else(expected)?;
            let fields: Vec<(&str, Type)> = r.fields().map(|f| (f.name, f.ty)).collect();
            Val::Record(named(object, &fields, "field")?)
        }
        Type::Tuple(t) => {
            let array = json.as_array().ok_or_else(expected)?;
            let types: Vec<Type> = t.types().collect();
            if array.len() != types.len() {
                return Err(expected());
            }
            let values = array
                .iter()
                .zip(&types)
                .enumerate()
                .map(|(i, (v, t))| from_json(v, t).map_err(|e| e.inside(&format!("[{i}]"))));
            Val::Tuple(values.collect::<Result<_, _>>()?)
        }
        Type::Variant(v) => {
            let (name, payload) = tagged(json).ok_or_else(expected)?;
            let Some(case) = v.cases().find(|c| c.name == name) else {
                let names: Vec<&str> = v.cases().map(|c| c.name).collect();
                return Err(no_case(name, &names));
            };
            Val::Variant(
                name.to_string(),
                payload_of(name, payload, case.ty.as_ref())?,
            )
        }
        Type::Enum(e) => {
            let name = json.as_str().ok_or_else(expected)?;
            if !e.names().any(|n| n == name) {
                return Err(no_case(name, &e.names().collect::<Vec<_>>()));
            }
            Val::Enum(name.to_string())
        }
        Type::Flags(f) => {
            let array = json.as_array().ok_or_else(expected)?;
            let known: Vec<&str> = f.names().collect();
            let mut set: Vec<String> = Vec::with_capacity(array.len());
            for (i, item) in array.iter().enumerate() {
                let at = |e: JsonError| e.inside(&format!("[{i}]"));
                let flag = || at(mismatch(&format!("a flag of {}", wit_type(ty)), item, ""));
                let name = item.as_str().ok_or_else(flag)?;
                if !known.contains(&name) {
                    return Err(at(no_case(name, &known)));
                }
                if set.iter().any(|s| s == name) {
                    return Err(at(JsonError::new(format!("flag `{name}` given twice"))));
                }
                set.push(name.to_string());
            }
            Val::Flags(set)
        }
        Type::Option(o) => {
            let inner = o.ty();
            match (json, &inner) {
                (Value::Null, _) => Val::Option(None),
                (_, Type::Option(_)) => {
                    let some = json
                        .as_object()
                        .filter(|o| o.len() == 1)
                        .and_then(|o| o.get("some"))
                        .ok_or_else(|| {
                            let what = format!("null or {{\"some\": …}} for {}", wit_type(ty));
                            mismatch(&what, json, "")
                        })?;
                    let v = from_json(some, &inner).map_err(|e| e.inside(".some"))?;
                    Val::Option(Some(Box::new(v)))
                }
                _ => Val::Option(Some(Box::new(from_json(json, &inner)?))),
            }
        }
        Type::Result(r) => {
            let (name, payload) = tagged(json)
                .filter(|(name, _)| matches!(*name, "ok" | "err"))
                .ok_or_else(|| {
                    let what = format!("{{\"ok\": …}} or {{\"err\": …}} for {}", wit_type(ty));
                    mismatch(&what, json, "")
                })?;
            if name == "ok" {
                Val::Result(Ok(payload_of(name, payload, r.ok().as_ref())?))
            } else {
                Val::Result(Err(payload_of(name, payload, r.err().as_ref())?))
            }
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return Err(JsonError::new(format!(
                "a {} cannot be given as JSON",
                wit_type(ty)
            )));
        }
    })
}

/// `value` as JSON (see the [module docs](self) for the mapping). Never fails: a value JSON
/// cannot carry (a resource, a future, a stream) is a string naming its kind.
///
/// ```
/// use wasmpool::json::to_json;
/// use wasmtime::component::Val;
/// let point = Val::Record(vec![("x".into(), Val::S32(1)), ("y".into(), Val::S32(-2))]);
/// assert_eq!(to_json(&point), serde_json::json!({"x": 1, "y": -2}));
/// assert_eq!(to_json(&Val::U64(u64::MAX)), serde_json::json!("18446744073709551615"));
/// ```
pub fn to_json(value: &Val) -> Value {
    match value {
        Val::Bool(b) => Value::Bool(*b),
        Val::S8(x) => Value::from(*x),
        Val::U8(x) => Value::from(*x),
        Val::S16(x) => Value::from(*x),
        Val::U16(x) => Value::from(*x),
        Val::S32(x) => Value::from(*x),
        Val::U32(x) => Value::from(*x),
        Val::S64(x) if x.unsigned_abs() <= MAX_EXACT_INTEGER => Value::from(*x),
        Val::U64(x) if *x <= MAX_EXACT_INTEGER => Value::from(*x),
        Val::S64(x) => Value::String(x.to_string()),
        Val::U64(x) => Value::String(x.to_string()),
        // Through its shortest decimal form, so that 0.1f32 is 0.1, not 0.10000000149….
        Val::Float32(x) => float_json(x.to_string().parse().unwrap_or(f64::from(*x))),
        Val::Float64(x) => float_json(*x),
        Val::Char(c) => Value::String(c.to_string()),
        Val::String(s) => Value::String(s.clone()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        Val::Map(entries) => {
            if entries.iter().all(|(k, _)| matches!(k, Val::String(_))) {
                let object = entries.iter().filter_map(|(k, v)| match k {
                    Val::String(k) => Some((k.clone(), to_json(v))),
                    _ => None,
                });
                Value::Object(object.collect())
            } else {
                let pairs = entries
                    .iter()
                    .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]));
                Value::Array(pairs.collect())
            }
        }
        Val::Record(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), to_json(v)))
                .collect(),
        ),
        Val::Variant(name, None) | Val::Enum(name) => Value::String(name.clone()),
        Val::Variant(name, Some(payload)) => tag(name, Some(payload)),
        Val::Flags(names) => Value::Array(names.iter().cloned().map(Value::String).collect()),
        Val::Option(None) => Value::Null,
        Val::Option(Some(inner)) => match **inner {
            Val::Option(_) => tag("some", Some(inner)),
            _ => to_json(inner),
        },
        Val::Result(Ok(payload)) => tag("ok", payload.as_deref()),
        Val::Result(Err(payload)) => tag("err", payload.as_deref()),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            Value::String(val_kind(value).to_string())
        }
    }
}

impl TaskComponent {
    /// A call of the function `name` (any name [`TaskComponent::call`] accepts) with its
    /// arguments in JSON: an array of them in order, or an object of named parameters (a
    /// parameter of `option` type may be left out). Each is converted by the parameter's
    /// WIT type as the [`json`](crate::json) module describes.
    ///
    /// A value that does not fit is [`CallError::Json`], whose path starts at the parameter:
    /// `.ps[2].x: expected s32, got "a"`.
    ///
    /// ```no_run
    /// # let component = wasmpool::TaskComponent::from_file("fixture_tasks.wasm")?;
    /// use serde_json::json;
    /// let call = component.call_json("types.sum-points", &json!([[{"x": 1, "y": 2}]]))?;
    /// let call = component.call_json("math.add", &json!({"a": 1, "b": 2}))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_json(&self, name: &str, args: &Value) -> Result<Call, CallError> {
        let function = self.lookup(name)?;
        let f = self.function_at(function);
        let params: Vec<(&str, Type)> = f.params().collect();
        let failed = |error: JsonError| CallError::Json {
            function: f.name().to_string(),
            error,
        };
        let values = match args {
            Value::Array(array) => {
                if array.len() != params.len() {
                    return Err(CallError::Arity {
                        function: f.name().to_string(),
                        expected: params.len(),
                        given: array.len(),
                    });
                }
                let values = array.iter().zip(&params).map(|(v, (name, ty))| {
                    from_json(v, ty).map_err(|e| e.inside(&format!(".{name}")))
                });
                values.collect::<Result<Vec<_>, _>>().map_err(failed)?
            }
            Value::Object(object) => named(object, &params, "parameter")
                .map_err(failed)?
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            _ => {
                return Err(failed(JsonError::new(format!(
                    "expected an array of the arguments or an object of named parameters, \
                     got {}",
                    shown(args)
                ))));
            }
        };
        self.call_at(function, values)
    }
}

impl TaskValue {
    /// The value as JSON, as the [`json`](crate::json) module describes (`null` for a
    /// function without a result).
    ///
    /// ```
    /// use wasmpool::TaskValue;
    /// use wasmtime::component::Val;
    /// let v = TaskValue::from(Val::Result(Err(Some(Box::new(Val::String("no".into()))))));
    /// assert_eq!(v.to_json(), serde_json::json!({"err": "no"}));
    /// ```
    pub fn to_json(&self) -> Value {
        self.val().map_or(Value::Null, to_json)
    }
}

/// An integer of type `ty` from a JSON number with an exact integer value, or (64-bit types)
/// from a decimal string.
fn integer<T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr>(
    json: &Value,
    ty: &Type,
) -> Result<T, JsonError> {
    let wrong = |note: &str| mismatch(&wit_type(ty), json, note);
    let out_of_range = || wrong(" (out of range)");
    let wide = matches!(ty, Type::S64 | Type::U64);
    match json {
        Value::Number(n) => {
            if let Some(x) = n.as_u64() {
                return T::try_from(x).map_err(|_| out_of_range());
            }
            if let Some(x) = n.as_i64() {
                return T::try_from(x).map_err(|_| out_of_range());
            }
            match n.as_f64() {
                // Exact: an integral value of at most 2^53 in magnitude.
                Some(x) if x.fract() == 0.0 && x.abs() <= MAX_EXACT_INTEGER as f64 => {
                    T::try_from(x as i64).map_err(|_| out_of_range())
                }
                // 2^64: beyond every integer type.
                Some(x) if x.fract() == 0.0 && x.abs() >= 18_446_744_073_709_551_616.0 => {
                    Err(out_of_range())
                }
                Some(x) if x.fract() == 0.0 && wide => Err(wrong(
                    " (not exact as a JSON number; write it in full or as a string)",
                )),
                Some(x) if x.fract() == 0.0 => Err(wrong(" (not exact as a JSON number)")),
                _ => Err(wrong(" (not an integer)")),
            }
        }
        Value::String(text) if wide => text.parse().map_err(|_| {
            let digits = text.trim_start_matches('-');
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                out_of_range()
            } else {
                wrong(" (not a decimal integer)")
            }
        }),
        _ => Err(wrong("")),
    }
}

/// `expected {what}, got {json}{note}`.
fn mismatch(what: &str, json: &Value, note: &str) -> JsonError {
    JsonError::new(format!("expected {what}, got {}{note}", shown(json)))
}

/// A float from a number, or from `"nan"`, `"inf"`, `"-inf"`.
fn float(json: &Value) -> Option<f64> {
    match json {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "nan" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn float_json(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None if x.is_nan() => Value::String("nan".into()),
        None if x > 0.0 => Value::String("inf".into()),
        None => Value::String("-inf".into()),
    }
}

fn items(array: &[Value], ty: &Type) -> Result<Vec<Val>, JsonError> {
    array
        .iter()
        .enumerate()
        .map(|(i, v)| from_json(v, ty).map_err(|e| e.inside(&format!("[{i}]"))))
        .collect()
}

/// The entries of a map: from an object (string keys), or from an array of `[key, value]`
/// pairs; `None` when `json` is neither.
fn map_entries(
    json: &Value,
    key: &Type,
    value: &Type,
) -> Option<Result<Vec<(Val, Val)>, JsonError>> {
    match json {
        Value::Object(object) => Some(
            object
                .iter()
                .map(|(k, v)| {
                    let at = |e: JsonError| e.inside(&format!("[{}]", Value::from(k.as_str())));
                    let k = from_json(&Value::from(k.as_str()), key).map_err(at)?;
                    Ok((k, from_json(v, value).map_err(at)?))
                })
                .collect(),
        ),
        Value::Array(pairs) => Some(
            pairs
                .iter()
                .enumerate()
                .map(|(i, pair)| {
                    let at = |e: JsonError| e.inside(&format!("[{i}]"));
                    let [k, v] = pair.as_array().map(Vec::as_slice).unwrap_or_default() else {
                        return Err(at(JsonError::new(format!(
                            "expected a [key, value] pair, got {}",
                            shown(pair)
                        ))));
                    };
                    let k = from_json(k, key).map_err(|e| at(e.inside("[0]")))?;
                    Ok((k, from_json(v, value).map_err(|e| at(e.inside("[1]")))?))
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The values of `object`'s members named as in `fields`, in their order: a missing member
/// of `option` type is none; a missing one of another type, or a member not in `fields`,
/// is an error (`what` names the members: `field`, `parameter`).
fn named(
    object: &Map<String, Value>,
    fields: &[(&str, Type)],
    what: &str,
) -> Result<Vec<(String, Val)>, JsonError> {
    if let Some(unknown) = object.keys().find(|k| !fields.iter().any(|(n, _)| n == k)) {
        let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        return Err(JsonError::new(format!(
            "no {what} `{unknown}`; expected: {}",
            names.join(", ")
        )));
    }
    fields
        .iter()
        .map(|(name, ty)| {
            let value = match (object.get(*name), ty) {
                (Some(v), _) => from_json(v, ty).map_err(|e| e.inside(&format!(".{name}")))?,
                (None, Type::Option(_)) => Val::Option(None),
                (None, _) => {
                    return Err(JsonError::new(format!("missing {what} `{name}`")));
                }
            };
            Ok((name.to_string(), value))
        })
        .collect()
}

/// A tagged value: `{"name": payload}`, or `"name"` (no payload).
fn tagged(json: &Value) -> Option<(&str, Option<&Value>)> {
    match json {
        Value::String(name) => Some((name, None)),
        Value::Object(object) if object.len() == 1 => {
            object.iter().next().map(|(k, v)| (k.as_str(), Some(v)))
        }
        _ => None,
    }
}

/// `{"name": payload}`, with `null` for no payload.
fn tag(name: &str, payload: Option<&Val>) -> Value {
    let mut object = Map::with_capacity(1);
    object.insert(name.to_string(), payload.map_or(Value::Null, to_json));
    Value::Object(object)
}

/// The payload of case `name`, of type `ty` (none when the case has none: then only a
/// missing payload or `null` fits).
fn payload_of(
    name: &str,
    payload: Option<&Value>,
    ty: Option<&Type>,
) -> Result<Option<Box<Val>>, JsonError> {
    match (payload, ty) {
        (None | Some(Value::Null), None) => Ok(None),
        (Some(v), None) => Err(JsonError::new(format!(
            "case `{name}` has no payload, got {}",
            shown(v)
        ))
        .inside(&format!(".{name}"))),
        (None, Some(t)) => Err(JsonError::new(format!(
            "case `{name}` needs a {} payload: write {{\"{name}\": …}}",
            wit_type(t)
        ))),
        (Some(v), Some(t)) => from_json(v, t)
            .map(|v| Some(Box::new(v)))
            .map_err(|e| e.inside(&format!(".{name}"))),
    }
}

fn no_case(name: &str, names: &[&str]) -> JsonError {
    JsonError::new(format!(
        "no case `{name}`; expected one of: {}",
        names.join(", ")
    ))
}

/// `json` as compact text, cut to [`SHOWN`] characters.
fn shown(json: &Value) -> String {
    let text = json.to_string();
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
