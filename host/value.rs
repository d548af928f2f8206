//! The value a task returns.

use std::fmt;

use wasmtime::component::{Val, wasm_wave};

use crate::error::TaskError;

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
#[derive(Clone, PartialEq, Default)]
pub struct TaskValue(Repr);

#[derive(Clone, PartialEq, Default)]
enum Repr {
    /// A function without a result.
    #[default]
    Unit,
    Val(Val),
    /// The outcomes of a chunk's calls, in order: the value of the one task a process pool's
    /// chunked map makes of a chunk. Never seen outside the crate: the map takes it apart
    /// (`executor.rs`), and to everything else it is a value without a component value.
    Chunk(Vec<Result<TaskValue, TaskError>>),
}

impl TaskValue {
    /// A value of a function that returns nothing.
    pub fn unit() -> Self {
        TaskValue(Repr::Unit)
    }

    /// The outcomes of a chunk's calls, as one task's value.
    pub(crate) fn chunk(outcomes: Vec<Result<TaskValue, TaskError>>) -> Self {
        TaskValue(Repr::Chunk(outcomes))
    }

    /// The outcomes of a chunk's calls, if this is a chunk's value.
    pub(crate) fn into_chunk(self) -> Option<Vec<Result<TaskValue, TaskError>>> {
        match self.0 {
            Repr::Chunk(outcomes) => Some(outcomes),
            Repr::Unit | Repr::Val(_) => None,
        }
    }

    /// The outcomes of a chunk's calls, if this is a chunk's value.
    pub(crate) fn as_chunk(&self) -> Option<&[Result<TaskValue, TaskError>]> {
        match &self.0 {
            Repr::Chunk(outcomes) => Some(outcomes),
            _ => None,
        }
    }

    /// The component value, if the function returns one.
    pub fn val(&self) -> Option<&Val> {
        match &self.0 {
            Repr::Val(v) => Some(v),
            Repr::Unit | Repr::Chunk(_) => None,
        }
    }

    /// Takes the component value out.
    pub fn into_val(self) -> Option<Val> {
        match self.0 {
            Repr::Val(v) => Some(v),
            Repr::Unit | Repr::Chunk(_) => None,
        }
    }

    /// The value as WAVE text (`""` for a function without a result).
    pub fn to_wave(&self) -> String {
        self.val().map(wave_text).unwrap_or_default()
    }

    /// The value as an `f64`, if it is a `f64` or `f32`.
    pub fn as_f64(&self) -> Option<f64> {
        match self.val() {
            Some(Val::Float64(x)) => Some(*x),
            Some(Val::Float32(x)) => Some(f64::from(*x)),
            _ => None,
        }
    }

    /// The value as an `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self.val()? {
            Val::S8(x) => Some(x.into()),
            Val::S16(x) => Some(x.into()),
            Val::S32(x) => Some(x.into()),
            Val::S64(x) => Some(x),
            Val::U8(x) => Some(x.into()),
            Val::U16(x) => Some(x.into()),
            Val::U32(x) => Some(x.into()),
            Val::U64(x) => i64::try_from(x).ok(),
            _ => None,
        }
    }

    /// The value as a string slice, if it is a `string`.
    pub fn as_str(&self) -> Option<&str> {
        match self.val() {
            Some(Val::String(s)) => Some(s),
            _ => None,
        }
    }
}

impl From<Val> for TaskValue {
    fn from(v: Val) -> Self {
        TaskValue(Repr::Val(v))
    }
}

impl From<Option<Val>> for TaskValue {
    fn from(v: Option<Val>) -> Self {
        TaskValue(v.map_or(Repr::Unit, Repr::Val))
    }
}

/// `TaskValue(Some(v))`, `TaskValue(None)` for a function without a result.
impl fmt::Debug for TaskValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Chunk(outcomes) => f.debug_tuple("TaskValue::chunk").field(outcomes).finish(),
            _ => f.debug_tuple("TaskValue").field(&self.val()).finish(),
        }
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
