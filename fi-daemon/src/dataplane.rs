//! The data plane: fi's eBPF programs loaded into the kernel, and where they are attached.
//!
//! Every attachment is a TCX or cgroup *link* owned by this process, so the kernel removes
//! it when the daemon exits, however it exits (also SIGKILL): no fault outlives the daemon.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Instant,
};

use aya::{
    Ebpf, EbpfError,
    maps::{
        Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, ProgramArray, RingBuf,
    },
    programs::{
        CgroupAttachMode, LinkOrder, ProgramError, SchedClassifier, SockOps, TcAttachType,
        tc::TcAttachOptions,
    },
};
use fi_common::{
    counters::Counter,
    flow::{FlowKey, FlowState},
    http::CaptureConfig,
    maps::{
        FI_CAPTURE, FI_CLIENT_PORTS, FI_COUNTERS, FI_EVENTS, FI_FLOWS, FI_HEARTBEAT, FI_INJECTOR,
        FI_JUMP, FI_RESPONSES, FI_RULE_COUNT, FI_RULE_STATS, FI_RULES, FI_TARGETS,
        JUMP_REQUEST_MORE, JUMP_RESPONSE_MORE,
    },
};

use crate::ebpf_object;

/// Names of the programs in the eBPF object.
pub mod program {
    pub const TC_EGRESS: &str = "fi_tc_egress";
    pub const TC_INGRESS: &str = "fi_tc_ingress";
    pub const SOCK_OPS: &str = "fi_sockops";
    pub const REINJECT: &str = "fi_reinject";
    /// Tail-called by the TC programs to read a segment's requests and responses; never
    /// attached.
    pub const REQUEST_MORE: &str = "fi_req_more";
    pub const RESPONSE_MORE: &str = "fi_resp_more";
}

/// The program in each slot of the tail calls' program array ([`FI_JUMP`]).
const JUMP_SLOTS: [(u32, &str); 2] = [
    (JUMP_REQUEST_MORE, program::REQUEST_MORE),
    (JUMP_RESPONSE_MORE, program::RESPONSE_MORE),
];
// Every slot of the array is filled.
const _: () = assert!(JUMP_SLOTS.len() == fi_common::maps::JUMP_SLOTS as usize);

/// Failures of loading or attaching fi's programs.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error(
        "this binary was built without its eBPF object; build it with `cargo xtask build` \
         (or set FI_EBPF_OBJECT to a built fi-ebpf object before `cargo build`)"
    )]
    ObjectNotBuilt,
    #[error("loading the eBPF object (needs root, or CAP_BPF and CAP_NET_ADMIN): {0}")]
    Load(#[source] Box<EbpfError>),
    #[error("program {name} is missing from the eBPF object or has the wrong type")]
    MissingProgram { name: &'static str },
    #[error("map {name} is missing from the eBPF object")]
    MissingMap { name: &'static str },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("loading program {name} into the kernel (verifier or permissions): {source}")]
    LoadProgram {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(
        "attaching {program} to {hook} of interface {interface:?} (TCX needs Linux 6.6 or \
         newer; does the interface exist?): {source}"
    )]
    AttachInterface {
        program: &'static str,
        hook: &'static str,
        interface: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("opening cgroup {path:?}: {source}")]
    OpenCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("attaching {program} to cgroup {path:?}: {source}")]
    AttachCgroup {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
}

/// The hook of one attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    TcEgress,
    TcIngress,
    SockOps,
}

/// How the TC classifiers are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcMode {
    /// TCX links (Linux 6.6, or a backport): they die with the daemon.
    Tcx,
    /// cls_bpf filters on a clsact qdisc, through netlink: they outlive a killed daemon,
    /// so the dead-man switch stops their faults and the next daemon removes them
    /// (crate::tc_filters).
    Netlink,
}

impl TcMode {
    pub fn name(self) -> &'static str {
        match self {
            TcMode::Tcx => "tcx",
            TcMode::Netlink => "netlink",
        }
    }
}

/// Which TC attachment the daemon uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TcChoice {
    /// TCX where the kernel takes it (tried, not guessed from the version), else netlink.
    #[default]
    Probe,
    Only(TcMode),
}

/// One program attached to one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub hook: Hook,
    /// TC hooks: how. None for sock_ops.
    pub mode: Option<TcMode>,
    /// Interface name, or cgroup directory.
    pub target: String,
    pub program: &'static str,
}

/// fi's programs, loaded, with their attachments.
pub struct DataPlane {
    // Owns the programs and their links: dropping it detaches everything.
    ebpf: Ebpf,
    _jump: ProgramArray<MapData>,
    counters: PerCpuArray<MapData, u64>,
    attachments: Vec<Attachment>,
    loaded_at: Instant,
    /// How TC classifiers are attached: chosen, or what the first attachment found (with
    /// [`TcChoice::Probe`]).
    mode: Option<TcMode>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("attachments", &self.attachments)
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Loads the embedded object and every program in it (verifies them), attaching none.
    /// `capture` names the request headers the kernel copies out (traceparent, ...).
    pub fn load(capture: &CaptureConfig) -> Result<Self, DataPlaneError> {
        Self::load_object(
            ebpf_object::object().ok_or(DataPlaneError::ObjectNotBuilt)?,
            capture,
        )
    }

    /// Loads a given eBPF object; [`DataPlane::load`] uses the embedded one.
    pub fn load_object(object: &[u8], capture: &CaptureConfig) -> Result<Self, DataPlaneError> {
        let mut ebpf = Ebpf::load(object).map_err(|e| DataPlaneError::Load(Box::new(e)))?;
        let mut config: Array<_, CaptureConfig> = map_mut(&mut ebpf, FI_CAPTURE)?;
        config.set(0, capture, 0).map_err(map_error(FI_CAPTURE))?;
        for name in [
            program::TC_EGRESS,
            program::TC_INGRESS,
            program::REINJECT,
            program::REQUEST_MORE,
            program::RESPONSE_MORE,
        ] {
            let program = classifier(&mut ebpf, name)?;
            retrying_eagain(|| program.load()).map_err(|source| DataPlaneError::LoadProgram {
                name,
                source: Box::new(source),
            })?;
        }
        let name = program::SOCK_OPS;
        let program = sock_ops(&mut ebpf)?;
        retrying_eagain(|| program.load()).map_err(|source| DataPlaneError::LoadProgram {
            name,
            source: Box::new(source),
        })?;

        // The tail calls. The handle is kept: the kernel empties a program array when user
        // space lets go of it.
        let mut jump: ProgramArray<_> = take_map(&mut ebpf, FI_JUMP)?;
        for (slot, name) in JUMP_SLOTS {
            let fd = classifier(&mut ebpf, name)?.fd().map_err(|source| {
                DataPlaneError::LoadProgram {
                    name,
                    source: Box::new(source),
                }
            })?;
            jump.set(slot, fd, 0).map_err(map_error(FI_JUMP))?;
        }

        let counters = take_map(&mut ebpf, FI_COUNTERS)?;
        Ok(Self {
            ebpf,
            _jump: jump,
            counters,
            attachments: Vec::new(),
            loaded_at: Instant::now(),
            mode: None,
        })
    }

    /// How TC classifiers are to be attached from now on (before the first attachment).
    pub fn choose_tc(&mut self, choice: TcChoice) {
        self.mode = match choice {
            TcChoice::Probe => None,
            TcChoice::Only(mode) => Some(mode),
        };
    }

    /// How TC classifiers are attached: None before the first attachment.
    pub fn tc_mode(&self) -> Option<TcMode> {
        self.mode
    }

    /// Attaches the egress and ingress classifiers to an interface: as TCX links where the
    /// kernel takes them (the first attachment tries), else as fi's netlink filters.
    pub fn attach_interface(&mut self, interface: &str) -> Result<(), DataPlaneError> {
        for (program, hook, attach_type) in [
            (program::TC_EGRESS, Hook::TcEgress, TcAttachType::Egress),
            (program::TC_INGRESS, Hook::TcIngress, TcAttachType::Ingress),
        ] {
            let error = |source: ProgramError| DataPlaneError::AttachInterface {
                program,
                hook: if hook == Hook::TcEgress {
                    "egress"
                } else {
                    "ingress"
                },
                interface: interface.to_owned(),
                source: Box::new(source),
            };
            let mode = self
                .attach_tc(program, interface, attach_type)?
                .map_err(error)?;
            self.attachments.push(Attachment {
                hook,
                mode: Some(mode),
                target: interface.to_owned(),
                program,
            });
        }
        Ok(())
    }

    /// Attaches one classifier in the chosen mode; the first attachment of
    /// [`TcChoice::Probe`] tries TCX and keeps what worked.
    fn attach_tc(
        &mut self,
        program: &'static str,
        interface: &str,
        attach_type: TcAttachType,
    ) -> Result<Result<TcMode, ProgramError>, DataPlaneError> {
        let classifier = classifier(&mut self.ebpf, program)?;
        let attached = match self.mode {
            Some(TcMode::Tcx) => {
                attach_tcx(classifier, interface, attach_type).map(|()| TcMode::Tcx)
            }
            Some(TcMode::Netlink) => {
                attach_netlink(classifier, interface, attach_type).map(|()| TcMode::Netlink)
            }
            // The probe: TCX if the kernel has it. A kernel without it refuses the attach
            // type (EINVAL); other errors are errors.
            None => match attach_tcx(classifier, interface, attach_type) {
                Ok(()) => Ok(TcMode::Tcx),
                Err(e) if tcx_missing(&e) => {
                    attach_netlink(classifier, interface, attach_type).map(|()| TcMode::Netlink)
                }
                Err(e) => Err(e),
            },
        };
        if let Ok(mode) = attached {
            self.mode = Some(mode);
        }
        Ok(attached)
    }

    /// Attaches the sock_ops program to a cgroup directory (it then sees every TCP socket
    /// of the processes in that cgroup and its descendants).
    pub fn attach_cgroup(&mut self, path: &Path) -> Result<(), DataPlaneError> {
        let program = program::SOCK_OPS;
        let cgroup = File::open(path).map_err(|source| DataPlaneError::OpenCgroup {
            path: path.to_owned(),
            source,
        })?;
        // A cgroup *link* always coexists with other programs on the hook (the kernel
        // attaches links in multi mode); the flags of link_create must stay 0 (Single).
        sock_ops(&mut self.ebpf)?
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|source| DataPlaneError::AttachCgroup {
                program,
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        self.attachments.push(Attachment {
            hook: Hook::SockOps,
            mode: None,
            target: path.display().to_string(),
            program,
        });
        Ok(())
    }

    /// Every counter, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataPlaneError> {
        Counter::ALL
            .iter()
            .map(|&counter| {
                let per_cpu = self
                    .counters
                    .get(&counter.index(), 0)
                    .map_err(map_error(FI_COUNTERS))?;
                Ok((counter, per_cpu.iter().sum()))
            })
            .collect()
    }

    /// The dead-man switch's heartbeat: the programs inject only while the last beat is
    /// younger than `HEARTBEAT_BOUND_NS` (1 s). The daemon beats every 100 ms.
    pub fn beat(&mut self) -> Result<(), DataPlaneError> {
        let mut map: Array<_, u64> = map_mut(&mut self.ebpf, FI_HEARTBEAT)?;
        let now = crate::clock::monotonic_now().as_nanos() as u64;
        map.set(0, now, 0).map_err(map_error(FI_HEARTBEAT))
    }

    /// Attaches the re-injector to the egress of the daemon's injector interface, and
    /// tells the TC programs where to send the packets they hold.
    pub fn attach_injector(&mut self, interface: &str, ifindex: u32) -> Result<(), DataPlaneError> {
        let mut map: Array<_, u32> = map_mut(&mut self.ebpf, FI_INJECTOR)?;
        map.set(0, ifindex, 0).map_err(map_error(FI_INJECTOR))?;
        let program = program::REINJECT;
        let mode = self
            .attach_tc(program, interface, TcAttachType::Egress)?
            .map_err(|source| DataPlaneError::AttachInterface {
                program,
                hook: "egress",
                interface: interface.to_owned(),
                source: Box::new(source),
            })?;
        self.attachments.push(Attachment {
            hook: Hook::TcEgress,
            mode: Some(mode),
            target: interface.to_owned(),
            program,
        });
        Ok(())
    }

    /// The rule maps, for the rule engine. Once.
    pub fn take_rule_maps(&mut self) -> Result<RuleMaps, DataPlaneError> {
        Ok(RuleMaps {
            rules: take_map(&mut self.ebpf, FI_RULES)?,
            count: take_map(&mut self.ebpf, FI_RULE_COUNT)?,
            stats: take_map(&mut self.ebpf, FI_RULE_STATS)?,
            responses: take_map(&mut self.ebpf, FI_RESPONSES)?,
        })
    }

    /// The kernel's target map, for [`crate::targets::Targets`]. Once.
    pub fn take_targets_map(&mut self) -> Result<BpfHashMap<MapData, u64, u32>, DataPlaneError> {
        take_map(&mut self.ebpf, FI_TARGETS)
    }

    /// The ring buffer of events, for the event pump. Once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DataPlaneError> {
        take_map(&mut self.ebpf, FI_EVENTS)
    }

    /// Detaches the classifiers from an interface (e.g. one that is going away).
    pub fn forget_interface(&mut self, interface: &str) {
        self.attachments
            .retain(|a| a.target != interface || a.hook == Hook::SockOps);
    }

    pub fn is_attached(&self, interface: &str) -> bool {
        self.attachments
            .iter()
            .any(|a| a.target == interface && a.hook != Hook::SockOps)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    pub fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    /// The kernel's flow map, read-only.
    fn flows_map(&self) -> Result<BpfHashMap<&MapData, FlowKey, FlowState>, DataPlaneError> {
        let name = FI_FLOWS;
        self.ebpf
            .map(name)
            .ok_or(DataPlaneError::MissingMap { name })?
            .try_into()
            .map_err(map_error(name))
    }

    /// Entries in use in the flow map (walks its keys: for status, not for hot paths).
    pub fn flows_in_use(&self) -> Result<u64, DataPlaneError> {
        Ok(self.flows_map()?.keys().filter(Result::is_ok).count() as u64)
    }

    /// The flows the kernel tracks now, with their state (walks the map: for the kill
    /// switch and rule removal, not for hot paths).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowState)>, DataPlaneError> {
        Ok(self.flows_map()?.iter().filter_map(Result::ok).collect())
    }

    /// Records a flow as sock_ops would at connect(), for `BPF_PROG_TEST_RUN` benchmarks
    /// and tests that feed crafted packets of that flow.
    pub fn track_flow(&mut self, key: FlowKey, cgroup_id: u64) -> Result<(), DataPlaneError> {
        let state = FlowState::new(1, cgroup_id, [0; fi_common::flow::CGROUP_LEVELS]);
        self.insert_flow(key, state)
    }

    /// Writes a flow entry as sock_ops does, its client port counted (once per port: the
    /// tests and benchmarks reuse a key).
    fn insert_flow(&mut self, key: FlowKey, state: FlowState) -> Result<(), DataPlaneError> {
        let mut ports: Array<_, u32> = map_mut(&mut self.ebpf, FI_CLIENT_PORTS)?;
        let port = u32::from(key.client_port);
        if ports.get(&port, 0).map_err(map_error(FI_CLIENT_PORTS))? == 0 {
            ports.set(port, 1, 0).map_err(map_error(FI_CLIENT_PORTS))?;
        }
        let mut flows: BpfHashMap<_, FlowKey, FlowState> = map_mut(&mut self.ebpf, FI_FLOWS)?;
        flows.insert(key, state, 0).map_err(map_error(FI_FLOWS))
    }

    /// [`DataPlane::track_flow`] for a connection whose request stream starts at
    /// `request_seq` and response stream at `response_seq`, as sock_ops records them when
    /// the handshake completes.
    pub fn track_flow_from(
        &mut self,
        key: FlowKey,
        cgroup_id: u64,
        request_seq: u32,
        response_seq: u32,
    ) -> Result<(), DataPlaneError> {
        let mut state = FlowState::new(1, cgroup_id, [0; fi_common::flow::CGROUP_LEVELS]);
        state.request.sync(request_seq);
        state.response.sync(response_seq);
        self.insert_flow(key, state)
    }

    /// A loaded classifier, for `BPF_PROG_TEST_RUN` and benchmarks.
    pub fn classifier(
        &mut self,
        name: &'static str,
    ) -> Result<&mut SchedClassifier, DataPlaneError> {
        classifier(&mut self.ebpf, name)
    }
}

/// Takes map `name` out of the object as a typed map that owns it (the `take_*` methods:
/// each map is taken once, by the part of the daemon that keeps it).
fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataPlaneError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(DataPlaneError::MissingMap { name })?;
    T::try_from(map).map_err(map_error(name))
}

/// Map `name`, left in the object, as a typed map borrowing it (to write an entry or two).
fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, DataPlaneError>
where
    T: TryFrom<&'a mut Map, Error = MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or(DataPlaneError::MissingMap { name })?;
    T::try_from(map).map_err(map_error(name))
}

/// Turns an error of map `name` into a [`DataPlaneError`].
fn map_error(name: &'static str) -> impl Fn(MapError) -> DataPlaneError {
    move |source| DataPlaneError::Map { name, source }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DataPlaneError> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataPlaneError::MissingProgram { name })
}

fn sock_ops(ebpf: &mut Ebpf) -> Result<&mut SockOps, DataPlaneError> {
    let name = program::SOCK_OPS;
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(DataPlaneError::MissingProgram { name })
}

/// The rule maps, as the rule engine writes them.
#[expect(missing_debug_implementations, reason = "aya maps are not Debug")]
pub struct RuleMaps {
    pub rules: Array<MapData, fi_common::rule::Rule>,
    pub count: Array<MapData, u32>,
    pub stats: BpfHashMap<MapData, u32, fi_common::rule::RuleStats>,
    pub responses: Array<MapData, fi_common::rule::AbortResponse>,
}

/// Loads a program again when the verifier gave up with EAGAIN: it does when a signal
/// reaches the loading thread mid-verification (a SIGCHLD, in a process that runs
/// children), which says nothing about the program. libbpf retries the same way.
fn retrying_eagain(
    mut load: impl FnMut() -> Result<(), aya::programs::ProgramError>,
) -> Result<(), aya::programs::ProgramError> {
    const ATTEMPTS: usize = 5;
    let mut attempt = 1;
    loop {
        match load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < ATTEMPTS =>
            {
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn attach_tcx(
    classifier: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
) -> Result<(), ProgramError> {
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    classifier
        .attach_with_options(interface, attach_type, options)
        .map(drop)
}

/// A netlink filter at fi's priority with this daemon's pid as its handle (see
/// crate::tc_filters), on a clsact qdisc made if missing.
fn attach_netlink(
    classifier: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
) -> Result<(), ProgramError> {
    match aya::programs::tc::qdisc_add_clsact(interface) {
        Err(aya::programs::tc::TcError::NetlinkError(e))
            if e.raw_os_error() == Some(libc::EEXIST) => {}
        other => other.map_err(ProgramError::from)?,
    }
    let options = TcAttachOptions::Netlink(aya::programs::tc::NlOptions {
        priority: crate::tc_filters::PRIORITY,
        handle: aya::programs::tc::TcHandle::from(crate::tc_filters::own_handle()),
        ..Default::default()
    });
    classifier
        .attach_with_options(interface, attach_type, options)
        .map(drop)
}

/// Whether a TCX attach failed because the kernel has no TCX.
fn tcx_missing(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)))
}
