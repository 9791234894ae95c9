use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
union Either {
    f: f32,
    u: u32,
}

fn main() {}
