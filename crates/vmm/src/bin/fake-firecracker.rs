//! `fake-firecracker`: `FakeFirecracker` as a process, a test double launched where the
//! real `firecracker` binary would be (`--api-sock PATH`). Test-only; see
//! `boxcutter_vmm::firecracker::fake`.

fn main() -> std::process::ExitCode {
    boxcutter_vmm::firecracker::fake::run_process(std::env::args_os())
}
