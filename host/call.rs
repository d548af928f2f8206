//! Building calls: checking the arguments against the function's parameter types before
//! anything runs. Finding the function by name is `component.rs`.

use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
use wasmtime::component::{Type, Val};

use crate::component::{ExportedFunction, TaskComponent};
use crate::error::CallError;
use crate::sandbox::Budget;
use crate::types::check_val;
use crate::wave_fields::stray_field;

/// One checked call of an exported function: what a task runs.
///
/// Made by [`TaskComponent::call`], [`TaskComponent::call_wave`] or
/// [`TaskComponent::call_wave_args`]; its arguments are known to fit the function's types.
#[derive(Clone, Debug)]
pub struct Call {
    component: TaskComponent,
    function: usize,
    args: Vec<Val>,
    budget: Budget,
    argv: Option<Vec<String>>,
}

impl Call {
    /// A call of `component`'s function number `function` with `args` (already checked),
    /// with no budget or arguments of its own.
    fn new(component: &TaskComponent, function: usize, args: Vec<Val>) -> Call {
        Call {
            component: component.clone(),
            function,
            args,
            budget: Budget::default(),
            argv: None,
        }
    }

    /// The component the call runs in.
    pub fn component(&self) -> &TaskComponent {
        &self.component
    }

    /// The function called.
    pub fn function(&self) -> &ExportedFunction {
        self.component.function_at(self.function)
    }

    /// The arguments.
    pub fn args(&self) -> &[Val] {
        &self.args
    }

    pub(crate) fn function_index(&self) -> usize {
        self.function
    }

    /// This call with its own budget: each field set here overrides the executor's.
    ///
    /// ```no_run
    /// # let component = wasmpool::TaskComponent::from_file("fixture_tasks.wasm")?;
    /// use std::time::Duration;
    /// let call = component
    ///     .call_wave("fib(40)")?
    ///     .with_budget(wasmpool::Budget::default().timeout(Duration::from_millis(100)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// This call's own budget (fields left unset take the executor's).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// This call with its own command-line arguments (`argv`), e.g. for a command
    /// component's `wasi:cli/run#run`; replaces the executor's.
    pub fn with_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.argv = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// This call's own arguments, if set.
    pub fn argv(&self) -> Option<&[String]> {
        self.argv.as_deref()
    }

    /// Whether `other` calls the same function of the same component under the same budget
    /// and argv, so that the two can run as one chunk (they differ at most in their
    /// arguments).
    pub(crate) fn alike(&self, other: &Call) -> bool {
        self.function == other.function
            && self.component.same_component(&other.component)
            && self.budget == other.budget
            && self.argv == other.argv
    }
}

impl TaskComponent {
    /// A call of the function `name` with `args`, checked against its parameter types.
    ///
    /// `name` is a top-level export (`fib`) or a function of an exported interface, by its
    /// full name (`wasmpool:tasks/math@0.1.0#add`), without the version, by the
    /// interface's short name (`math#add`), in WAVE's form (`math.add`), or alone (`echo-point`)
    /// when exactly one exported interface has a function of that name and no top-level
    /// function does ([`CallError::AmbiguousFunction`] when more than one has it).
    pub fn call(&self, name: &str, args: impl Into<Vec<Val>>) -> Result<Call, CallError> {
        self.call_at(self.lookup(name)?, args)
    }

    /// A call of the function at `function` in [`TaskComponent::functions`] (a process-pool
    /// worker gets the index from the pool), checked as [`TaskComponent::call`] checks it. An
    /// index out of range is [`CallError::UnknownFunction`] named `#{index}`.
    pub(crate) fn call_at(
        &self,
        function: usize,
        args: impl Into<Vec<Val>>,
    ) -> Result<Call, CallError> {
        if function >= self.functions().len() {
            return Err(CallError::UnknownFunction {
                name: format!("#{function}"),
                available: self.function_names(),
            });
        }
        let args = args.into();
        let f = self.function_at(function);
        // Checked as they come: no list of the parameters is made per call.
        let params = f.params();
        if params.len() != args.len() {
            return Err(CallError::Arity {
                function: f.name().to_string(),
                expected: params.len(),
                given: args.len(),
            });
        }
        for ((param, ty), arg) in params.zip(&args) {
            check_val(arg, &ty).map_err(|message| CallError::Type {
                function: f.name().to_string(),
                param: param.to_string(),
                message,
            })?;
        }
        Ok(Call::new(self, function, args))
    }

    /// A call written in WAVE, as `wasmtime run --invoke` takes it: `fib(30)`,
    /// `greet("ann")`, `math.add(1, 2)`.
    pub fn call_wave(&self, text: &str) -> Result<Call, CallError> {
        // The name is split off here, so that every spelling `call` accepts works, not only
        // the ones WAVE's grammar has (it has no `iface#func`).
        let Some(open) = text.find('(') else {
            return Err(CallError::Wave {
                function: text.to_string(),
                message: "expected a call like `name(args)`".to_string(),
            });
        };
        let name = text[..open].trim();
        // `f` stands for the name: positions in `source` past it are `open - 1` bytes early.
        let source = format!("f{}", &text[open..]);
        let parsed = UntypedFuncCall::parse(&source)
            .map_err(|e| CallError::wave(name, &e, text, 1, open))?;
        self.typed_call(name, &parsed, (text, 1, open))
    }

    /// A call of `name` whose arguments are WAVE text, exactly what would stand between
    /// the parentheses: `30`, or `"ann", 3`.
    pub fn call_wave_args(&self, name: &str, args: &str) -> Result<Call, CallError> {
        // `f(` comes before the arguments: positions in `source` are 2 bytes late.
        let source = format!("f({args})");
        let parsed =
            UntypedFuncCall::parse(&source).map_err(|e| CallError::wave(name, &e, args, 2, 0))?;
        self.typed_call(name, &parsed, (args, 2, 0))
    }

    /// The call of `name` with the `parsed` arguments; `(text, prefix, start)` places the
    /// parser's positions in the caller's text (see [`CallError::wave`]).
    fn typed_call(
        &self,
        name: &str,
        parsed: &UntypedFuncCall<'_>,
        (text, prefix, start): (&str, usize, usize),
    ) -> Result<Call, CallError> {
        let function = self.lookup(name)?;
        let f = self.function_at(function);
        let types: Vec<Type> = f.params().map(|(_, t)| t).collect();
        let args = parsed
            .to_wasm_params::<Val>(types.iter())
            .map_err(|e| CallError::wave(f.name(), &e, text, prefix, start))?;
        if let Some(params) = parsed.params_node()
            && let Some((span, what)) = stray_field(params, &types, parsed.source())
        {
            return Err(CallError::wave_at(
                f.name(),
                &what,
                span,
                text,
                prefix,
                start,
            ));
        }
        Ok(Call::new(self, function, args))
    }
}
