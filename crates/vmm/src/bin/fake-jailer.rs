//! `fake-jailer`: Firecracker's jailer as a test double, launched where the real `jailer`
//! would be, to jail `fake-firecracker`. Test-only; see
//! `boxcutter_vmm::firecracker::fake::run_jailer`.

fn main() -> std::process::ExitCode {
    boxcutter_vmm::firecracker::fake::run_jailer(std::env::args_os())
}
