//! Tier 2: crafted packets fed to the loaded TC programs with BPF_PROG_TEST_RUN, no
//! interface involved.

use aya::programs::{TestRun, TestRunOptions};
use fi_common::counters::Counter;
use fi_daemon::dataplane::{DataPlane, program};
use fi_tests::{packet, require_privileges};

/// `TCX_NEXT` (-1) as the kernel reports a program's return value.
const TCX_NEXT: u32 = u32::MAX;

fn counter(dataplane: &DataPlane, wanted: Counter) -> u64 {
    dataplane
        .counters()
        .expect("reading counters")
        .into_iter()
        .find_map(|(c, v)| (c == wanted).then_some(v))
        .expect("counter present")
}

fn run(dataplane: &mut DataPlane, name: &'static str, packet: &[u8]) -> u32 {
    let prog = dataplane.classifier(name).expect("classifier in object");
    let mut out = vec![0u8; packet.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ..TestRunOptions::default()
    };
    prog.test_run(opts)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN of {name}: {e}"))
        .return_value
}

#[test]
fn egress_passes_a_tcp_packet_to_the_next_program_and_counts_it() {
    require_privileges();
    let mut dataplane =
        DataPlane::load(&fi_common::http::CaptureConfig::EMPTY).expect("loading fi's programs");
    let request = packet::tcp4(
        [10, 77, 0, 1],
        [10, 77, 0, 2],
        40000,
        80,
        packet::TCP_PSH_ACK,
        b"GET / HTTP/1.1\r\nHost: b\r\n\r\n",
    );
    assert_eq!(counter(&dataplane, Counter::EgressPackets), 0);

    assert_eq!(run(&mut dataplane, program::TC_EGRESS, &request), TCX_NEXT);
    assert_eq!(counter(&dataplane, Counter::EgressPackets), 1);
    assert_eq!(
        counter(&dataplane, Counter::EgressBytes),
        request.len() as u64
    );
    assert_eq!(
        counter(&dataplane, Counter::IngressPackets),
        0,
        "egress must not count as ingress"
    );
}

#[test]
fn ingress_passes_an_ipv6_packet_and_counts_it() {
    require_privileges();
    let mut dataplane =
        DataPlane::load(&fi_common::http::CaptureConfig::EMPTY).expect("loading fi's programs");
    let mut dst = [0u8; 16];
    dst[0] = 0xfd;
    dst[1] = 0x77;
    dst[15] = 1;
    let response = packet::tcp6(
        [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        dst,
        80,
        40000,
        packet::TCP_PSH_ACK,
        b"HTTP/1.1 200 OK\r\n\r\n",
    );
    for _ in 0..3 {
        assert_eq!(
            run(&mut dataplane, program::TC_INGRESS, &response),
            TCX_NEXT
        );
    }
    assert_eq!(counter(&dataplane, Counter::IngressPackets), 3);
    assert_eq!(counter(&dataplane, Counter::EgressPackets), 0);
}

/// fi-ebpf names its maps by identifier (aya-ebpf's `#[map]` takes no constant): the built
/// object must hold exactly the maps of `fi_common::maps::ALL`, the list the daemon's
/// names come from.
#[test]
fn object_maps_are_the_shared_list() {
    require_privileges();
    let object = fi_daemon::ebpf_object::object().expect("the embedded eBPF object");
    let ebpf = aya::Ebpf::load(object).expect("loading the object's maps");
    let mut in_object: Vec<&str> = ebpf
        .maps()
        .map(|(name, _)| name)
        // The compiler's constant sections (.rodata, ...), which aya loads as maps too.
        .filter(|name| !name.starts_with('.'))
        .collect();
    in_object.sort_unstable();
    let mut shared = fi_common::maps::ALL.to_vec();
    shared.sort_unstable();
    let missing: Vec<_> = shared.iter().filter(|n| !in_object.contains(n)).collect();
    let unlisted: Vec<_> = in_object.iter().filter(|n| !shared.contains(n)).collect();
    assert!(
        missing.is_empty() && unlisted.is_empty(),
        "in fi_common::maps::ALL but not in the object: {missing:?}; in the object but not \
         in the list: {unlisted:?}"
    );
}
