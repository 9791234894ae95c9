use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
struct NoRepr {
    data: [f32; 4],
}

fn main() {}
