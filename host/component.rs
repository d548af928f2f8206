//! A loaded component: its exported functions, and finding one by name. Loading is
//! `load.rs`; calling is `call.rs`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Type};

use crate::error::{CallError, LoadError};
use crate::runtime::Runtime;
use crate::store::TaskState;
use crate::types::wit_signature;

/// One exported function a task can call.
#[derive(Clone)]
pub struct ExportedFunction {
    name: String,
    interface: Option<String>,
    pub(crate) index: ComponentExportIndex,
    pub(crate) ty: ComponentFunc,
}

impl ExportedFunction {
    /// The name to call it by: `fib` at the top level, `wasmpool:tasks/math@0.1.0#add`
    /// inside an exported interface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exported interface it belongs to, if any.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// The function's own name, without its interface.
    pub fn func_name(&self) -> &str {
        match &self.interface {
            Some(i) => &self.name[i.len() + 1..],
            None => &self.name,
        }
    }

    /// Its WIT signature, e.g. `func(n: u32) -> f64`.
    pub fn signature(&self) -> String {
        wit_signature(&self.ty)
    }

    /// Parameter names and types.
    pub fn params(&self) -> impl ExactSizeIterator<Item = (&str, Type)> + '_ {
        self.ty.params()
    }

    /// The result type, if the function returns one.
    pub fn result(&self) -> Option<Type> {
        self.ty.results().next()
    }
}

/// The functions `component` exports, top-level ones first, in export order.
pub(crate) fn exported_functions(engine: &Engine, component: &Component) -> Vec<ExportedFunction> {
    let mut out = Vec::new();
    for (name, export) in component.component_type().exports(engine) {
        match export.ty {
            ComponentItem::ComponentFunc(ty) => {
                if let Some(index) = component.get_export_index(None, name) {
                    out.push(ExportedFunction {
                        name: name.to_string(),
                        interface: None,
                        index,
                        ty,
                    });
                }
            }
            ComponentItem::ComponentInstance(instance) => {
                let Some(parent) = component.get_export_index(None, name) else {
                    continue;
                };
                for (func_name, item) in instance.exports(engine) {
                    let ComponentItem::ComponentFunc(ty) = item.ty else {
                        continue;
                    };
                    if let Some(index) = component.get_export_index(Some(&parent), func_name) {
                        out.push(ExportedFunction {
                            name: format!("{name}#{func_name}"),
                            interface: Some(name.to_string()),
                            index,
                            ty,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A compiled, linked and pre-instantiated task component. Cheap to clone; `Send + Sync`.
///
/// ```no_run
/// use wasmpool::TaskComponent;
/// let component = TaskComponent::from_file("fixture_tasks.wasm")?;
/// for f in component.functions() {
///     println!("{}: {}", f.name(), f.signature());
/// }
/// let call = component.call_wave("fib(20)")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TaskComponent {
    inner: Arc<ComponentInner>,
}

struct ComponentInner {
    origin: String,
    runtime: Runtime,
    pre: InstancePre<TaskState>,
    /// Linked against the async WASI host functions; made on the first task.
    pre_async: OnceLock<Result<InstancePre<TaskState>, String>>,
    functions: Vec<ExportedFunction>,
    /// Every usual spelling of each function's name (see [`spellings`]) that [`find`]
    /// resolves to it, made once: a map's or a loop's per-call lookup is one hash, not a
    /// search of every export's name (~4k instructions on the fixtures' 40).
    names: HashMap<Box<str>, usize>,
    /// The compiled code in wasmtime's serialized form, made on first use (for worker
    /// processes and the compilation cache).
    precompiled: OnceLock<Arc<[u8]>>,
    /// The `.wasm` it was compiled from, when known: what a cluster ships to its workers.
    source: OnceLock<Arc<[u8]>>,
}

impl std::fmt::Debug for TaskComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskComponent")
            .field("origin", &self.inner.origin)
            .field("functions", &self.inner.functions.len())
            .finish()
    }
}

impl TaskComponent {
    /// A loaded component (made by `load.rs`): `pre` is linked against `runtime`'s sync host
    /// functions, and `functions` are its exports.
    pub(crate) fn new(
        origin: String,
        runtime: Runtime,
        pre: InstancePre<TaskState>,
        functions: Vec<ExportedFunction>,
    ) -> TaskComponent {
        TaskComponent {
            inner: Arc::new(ComponentInner {
                origin,
                runtime,
                pre,
                pre_async: OnceLock::new(),
                names: spellings(functions.iter().map(|f| (f.name(), f.interface()))),
                functions,
                precompiled: OnceLock::new(),
                source: OnceLock::new(),
            }),
        }
    }

    /// Where the component came from (its path), for messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Every exported function, top-level ones first, in export order.
    pub fn functions(&self) -> &[ExportedFunction] {
        &self.inner.functions
    }

    /// The component's imports: `(name, kind)` with kind `interface`, `func`, ...
    pub fn imports(&self) -> Vec<String> {
        let engine = &self.inner.runtime.inner().engine;
        self.inner
            .pre
            .component()
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The compiled component in wasmtime's serialized form (a `.cwasm`), for
    /// [`Runtime::load_precompiled`]. Made once and kept.
    pub fn precompiled(&self) -> Result<Arc<[u8]>, LoadError> {
        if let Some(bytes) = self.inner.precompiled.get() {
            return Ok(bytes.clone());
        }
        let bytes: Arc<[u8]> = self
            .inner
            .pre
            .component()
            .serialize()
            .map_err(|e| LoadError::Invalid {
                origin: self.inner.origin.clone(),
                message: format!("cannot serialize: {e:#}"),
            })?
            .into();
        Ok(self.inner.precompiled.get_or_init(|| bytes).clone())
    }

    /// The `.wasm` bytes this component was compiled from, when known: loading from a
    /// `.wasm` file or bytes records them, loading precompiled code does not (see
    /// [`set_source`](Self::set_source)). A [`ClusterExecutor`](crate::cluster::ClusterExecutor)
    /// ships these to its workers, which compile them themselves.
    pub fn source(&self) -> Option<&Arc<[u8]>> {
        self.inner.source.get()
    }

    /// Records `bytes` as the `.wasm` this component was compiled from, for a component
    /// loaded from precompiled code that is to run on a cluster. Only the first call
    /// counts. Workers compile these bytes, not the precompiled code, so they must be the
    /// very file the precompiled code was made from (a function index means the same
    /// function in both).
    pub fn set_source(&self, bytes: Arc<[u8]>) {
        let _ = self.inner.source.set(bytes);
    }

    /// The runtime that loaded this component.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// True when both handles are the same loaded component.
    pub fn same_component(&self, other: &TaskComponent) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// True when both components were loaded by the same runtime.
    pub fn same_runtime(&self, other: &TaskComponent) -> bool {
        self.inner.runtime.same_as(&other.inner.runtime)
    }

    pub(crate) fn function_at(&self, index: usize) -> &ExportedFunction {
        &self.inner.functions[index]
    }

    /// The pre-instantiated component every task's instance is made from (the async path,
    /// see `invoke.rs`).
    pub(crate) fn instance_pre_async(&self) -> Result<&InstancePre<TaskState>, String> {
        self.inner
            .pre_async
            .get_or_init(|| {
                self.inner
                    .runtime
                    .inner()
                    .linker_async
                    .instantiate_pre(self.inner.pre.component())
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl TaskComponent {
    /// Finds an exported function by any of the names [`TaskComponent::call`] accepts.
    pub fn function(&self, name: &str) -> Result<&ExportedFunction, CallError> {
        self.lookup(name).map(|i| self.function_at(i))
    }

    /// The exported functions' names, comma-separated (for error messages).
    pub(crate) fn function_names(&self) -> String {
        let names: Vec<&str> = self.functions().iter().map(|f| f.name()).collect();
        names.join(", ")
    }

    /// The index of the exported function `name`, by any of the names
    /// [`TaskComponent::call`] accepts.
    pub(crate) fn lookup(&self, name: &str) -> Result<usize, CallError> {
        if let Some(&i) = self.inner.names.get(name) {
            return Ok(i);
        }
        let functions = self.functions();
        let named = functions.iter().map(|f| (f.name(), f.interface()));
        match find(named, name) {
            Ok(i) => Ok(i),
            Err(candidates) if candidates.is_empty() => Err(CallError::UnknownFunction {
                name: name.to_string(),
                available: self.function_names(),
            }),
            Err(candidates) => Err(CallError::AmbiguousFunction {
                name: name.to_string(),
                candidates: candidates
                    .iter()
                    .map(|&i| functions[i].name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// The names by which [`find`] finds each of `functions`, among their usual spellings:
/// the full name; for a function of an interface, the interface in each of its three forms
/// (see [`interface_matches`]) before `#`, or WAVE's `iface.func` (with the version after
/// the function, as WAVE writes it); and the bare name. A spelling is kept only where
/// [`find`] resolves it to that function, so a lookup in the map answers as [`find`] does.
fn spellings<'a>(
    functions: impl Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
) -> HashMap<Box<str>, usize> {
    let mut names = HashMap::new();
    for (i, (name, interface)) in functions.clone().enumerate() {
        let mut candidates = vec![name.to_string()];
        if let Some(interface) = interface
            && let Some(func) = name.get(interface.len() + 1..)
        {
            let (unversioned, version) = match interface.split_once('@') {
                Some((path, version)) => (path, Some(version)),
                None => (interface, None),
            };
            let short = unversioned.rsplit_once('/').map_or(unversioned, |(_, s)| s);
            for form in [interface, unversioned, short] {
                candidates.push(format!("{form}#{func}"));
            }
            for form in [unversioned, short] {
                candidates.push(format!("{form}.{func}"));
            }
            if let Some(version) = version {
                candidates.push(format!("{unversioned}.{func}@{version}"));
            }
            candidates.push(func.to_string());
        }
        for candidate in candidates {
            if find(functions.clone(), &candidate) == Ok(i) {
                names.insert(candidate.into_boxed_str(), i);
            }
        }
    }
    names
}

/// Finds `wanted` among `functions` (each its full name and its interface, if any): by its
/// full name; by a qualified name (see [`split_qualified`]); or, for a bare name that no
/// top-level function has, the function of that name in an exported interface, as
/// `wasmtime run --invoke` finds it. `Err` holds the candidates: none, or more than one.
fn find<'a>(
    functions: impl Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
    wanted: &str,
) -> Result<usize, Vec<usize>> {
    if let Some(i) = functions.clone().position(|(name, _)| name == wanted) {
        return Ok(i);
    }
    let qualified = split_qualified(wanted);
    let matches: Vec<usize> = functions
        .enumerate()
        .filter_map(|(i, (name, interface))| {
            let interface = interface?;
            let func = name.get(interface.len() + 1..)?;
            let fits = match &qualified {
                Some((want_interface, want_func)) => {
                    func == want_func && interface_matches(interface, want_interface)
                }
                None => func == wanted,
            };
            fits.then_some(i)
        })
        .collect();
    match matches[..] {
        [only] => Ok(only),
        _ => Err(matches),
    }
}

/// Splits `iface#func` or WAVE's `[pkg:ns/]iface.func[@version]` into interface and function.
fn split_qualified(name: &str) -> Option<(String, String)> {
    if let Some((interface, func)) = name.rsplit_once('#') {
        return Some((interface.to_string(), func.to_string()));
    }
    let (path, version) = match name.rsplit_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let (interface, func) = path.rsplit_once('.')?;
    let interface = match version {
        Some(v) => format!("{interface}@{v}"),
        None => interface.to_string(),
    };
    Some((interface, func.to_string()))
}

/// Does the exported interface `export` (e.g. `wasmpool:tasks/math@0.1.0`) answer to
/// `wanted`: the full name, the name without version, or the short name `math`?
fn interface_matches(export: &str, wanted: &str) -> bool {
    let unversioned = export.split_once('@').map_or(export, |(p, _)| p);
    let short = unversioned.rsplit_once('/').map_or(unversioned, |(_, s)| s);
    wanted == export || wanted == unversioned || wanted == short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_split() {
        assert_eq!(
            split_qualified("a:b/math@0.1.0#add"),
            Some(("a:b/math@0.1.0".into(), "add".into()))
        );
        assert_eq!(
            split_qualified("a:b/math.add@0.1.0"),
            Some(("a:b/math@0.1.0".into(), "add".into()))
        );
        assert_eq!(
            split_qualified("math.add"),
            Some(("math".into(), "add".into()))
        );
        assert_eq!(split_qualified("fib"), None);
    }

    /// Exports as [`find`] and [`spellings`] see them: a top-level `add`; `add`, `mul` and
    /// `neg` in a versioned interface; another `neg`; `run` in an unversioned interface.
    const FUNCTIONS: [(&str, Option<&str>); 6] = [
        ("add", None),
        ("a:b/math@0.1.0#add", Some("a:b/math@0.1.0")),
        ("a:b/math@0.1.0#mul", Some("a:b/math@0.1.0")),
        ("a:b/math@0.1.0#neg", Some("a:b/math@0.1.0")),
        ("a:b/ints@0.1.0#neg", Some("a:b/ints@0.1.0")),
        ("c:d/plain#run", Some("c:d/plain")),
    ];

    #[test]
    fn bare_names_find_one_interface_function() {
        let find = |wanted| find(FUNCTIONS.iter().copied(), wanted);
        assert_eq!(find("add"), Ok(0), "a top-level function comes first");
        assert_eq!(find("mul"), Ok(2));
        assert_eq!(find("math.add"), Ok(1));
        assert_eq!(find("neg"), Err(vec![3, 4]));
        assert_eq!(find("ints.neg"), Ok(4));
        assert_eq!(find("run"), Ok(5));
        assert_eq!(find("div"), Err(vec![]));
        assert_eq!(find(""), Err(vec![]));
    }

    #[test]
    fn the_spellings_map_answers_as_the_search_does() {
        let names = spellings(FUNCTIONS.iter().copied());
        for (spelling, &i) in &names {
            assert_eq!(
                find(FUNCTIONS.iter().copied(), spelling),
                Ok(i),
                "{spelling}"
            );
        }
        let at = |name: &str| names.get(name).copied();
        assert_eq!(
            at("add"),
            Some(0),
            "a top-level function keeps its bare name"
        );
        for spelling in [
            "a:b/math@0.1.0#mul",
            "a:b/math#mul",
            "math#mul",
            "a:b/math.mul",
            "math.mul",
            "a:b/math.mul@0.1.0",
            "mul",
        ] {
            assert_eq!(at(spelling), Some(2), "{spelling}");
        }
        assert_eq!(at("math.add"), Some(1));
        assert_eq!(at("ints.neg"), Some(4));
        assert_eq!(at("plain.run"), Some(5));
        assert_eq!(at("run"), Some(5));
        assert_eq!(
            at("neg"),
            None,
            "an ambiguous name is left to the search's error"
        );
        // Seven spellings of a versioned interface's function, five of an unversioned one's
        // (its name and its interface's are one); `add` and both `neg`s lose the bare name.
        assert_eq!(names.len(), 1 + 6 + 7 + 6 + 6 + 5, "{names:?}");
    }

    #[test]
    fn interface_names_match_in_three_forms() {
        let export = "wasmpool:tasks/math@0.1.0";
        assert!(interface_matches(export, "wasmpool:tasks/math@0.1.0"));
        assert!(interface_matches(export, "wasmpool:tasks/math"));
        assert!(interface_matches(export, "math"));
        assert!(!interface_matches(export, "types"));
    }
}
