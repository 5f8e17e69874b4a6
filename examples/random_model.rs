//! Writes a PyTorch-initialised model of the default shape (D = 2, H = 64, L = 3, ELU) to the
//! path given, for GPU smoke runs where no trained model is at hand (scripts/device_pack.sh).
fn main() {
    let path = std::env::args().nth(1).expect("usage: random_model OUT.safetensors");
    let m = flowsteer::model::Mlp::init_uniform(2, 64, 3, flowsteer::model::Activation::Elu, 7);
    m.save(std::path::Path::new(&path), "net").expect("writing the model");
    println!("wrote {path}");
}
