//! The `ciclo` command: validate and run processes, and (later) the server.

fn main() {
    println!("ciclo");
}
