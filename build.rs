// Rebuild when migrations or query files change: `sqlx::migrate!()` and `query_file!` embed
// them at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=queries");
}
