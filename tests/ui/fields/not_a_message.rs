use psyne::PsyneMessage;

#[derive(Clone, Copy)]
#[repr(C)]
struct Plain {
    x: f32,
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Outer {
    inner: Plain,
}

fn main() {}
