//! With `--features tch`: compiles `src/ops/torch/shim.cpp` (libtorch's convolution and
//! batch-norm backward functions, which the `tch` crate does not bind) against the headers of
//! the libtorch that torch-sys found and links. Other builds compile nothing here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ops/torch/shim.cpp");
    if std::env::var_os("CARGO_FEATURE_TCH").is_none() {
        return;
    }
    // torch-sys (`links = "tch"`) hands its libtorch lib folder to direct dependents.
    let lib = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB)"),
    );
    let root = lib.parent().expect("libtorch lib folder has a parent").to_path_buf();
    // PyTorch's wheels since 2.7 are built with the C++11 ABI; LIBTORCH_CXX11_ABI=0 for older.
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/ops/torch/shim.cpp")
        .compile("gateshift_torch_shim");
}
