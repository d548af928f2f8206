//! The value a task returns.

use std::fmt;

use wasmtime::component::{Val, wasm_wave};

/// What a finished task returned: the function's result as a component value, or nothing
/// for a function without a result. When the function returns `result<T, E>` and the guest
/// returned `ok(v)`, this is `v` (an `err` becomes [`crate::TaskError::Failed`]).
///
/// Its [`Display`](fmt::Display) form is WAVE text, the form `wasmtime run --invoke` prints.
///
/// ```
/// use wasmpool::TaskValue;
/// use wasmtime::component::Val;
/// let v = TaskValue::from(Val::Float64(0.5));
/// assert_eq!(v.as_f64(), Some(0.5));
/// assert_eq!(v.to_string(), "0.5");
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskValue(Option<Val>);

impl TaskValue {
    /// A value of a function that returns nothing.
    pub fn unit() -> Self {
        TaskValue(None)
    }

    /// The component value, if the function returns one.
    pub fn val(&self) -> Option<&Val> {
        self.0.as_ref()
    }

    /// Takes the component value out.
    pub fn into_val(self) -> Option<Val> {
        self.0
    }

    /// The value as WAVE text (`""` for a function without a result).
    pub fn to_wave(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(v) => wave_text(v),
        }
    }

    /// The value as an `f64`, if it is a `f64` or `f32`.
    pub fn as_f64(&self) -> Option<f64> {
        match self.0 {
            Some(Val::Float64(x)) => Some(x),
            Some(Val::Float32(x)) => Some(f64::from(x)),
            _ => None,
        }
    }

    /// The value as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self.0 {
            Some(Val::S8(x)) => Some(x.into()),
            Some(Val::S16(x)) => Some(x.into()),
            Some(Val::S32(x)) => Some(x.into()),
            Some(Val::S64(x)) => Some(x),
            Some(Val::U8(x)) => Some(x.into()),
            Some(Val::U16(x)) => Some(x.into()),
            Some(Val::U32(x)) => Some(x.into()),
            Some(Val::U64(x)) => i64::try_from(x).ok(),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a `string`.
    pub fn as_str(&self) -> Option<&str> {
        match &self.0 {
            Some(Val::String(s)) => Some(s),
            _ => None,
        }
    }
}

impl From<Val> for TaskValue {
    fn from(v: Val) -> Self {
        TaskValue(Some(v))
    }
}

impl From<Option<Val>> for TaskValue {
    fn from(v: Option<Val>) -> Self {
        TaskValue(v)
    }
}

impl fmt::Display for TaskValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wave())
    }
}

/// WAVE text of any component value. Values that WAVE cannot print (resources) fall back
/// to their debug form, so printing never fails.
pub(crate) fn wave_text(v: &Val) -> String {
    wasm_wave::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}
