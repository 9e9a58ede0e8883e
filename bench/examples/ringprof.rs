#[path = "../src/ring_bench.rs"]
mod ring_bench;
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    for _ in 0..3 {
        let r = if which == "rtrb" {
            ring_bench::rtrb(20_000_000)
        } else {
            ring_bench::ours(20_000_000)
        };
        println!("{which} {:.1}", r.unwrap());
    }
}
