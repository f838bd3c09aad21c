fn main() {
    eprintln!("flow: not yet implemented");
    std::process::exit(2);
}
