use psyne::PsyneMessage;

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Inner<const N: usize> {
    x: [f32; N],
}

// The derive cannot bound the size and alignment of `Inner<N>`, so it cannot prove `Outer<N>`
// free of padding: both fields are rejected, each at its type.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Outer<const N: usize> {
    inner: Inner<N>,
    pair: [Inner<N>; 2],
}

fn main() {}
