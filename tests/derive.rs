//! Behaviour of `#[derive(PsyneMessage)]`: accessors, views, ids, fingerprints, nesting and const
//! generics. Also run under AddressSanitizer by `.ci/run` (the matrix products read and write
//! through views over message memory).

use bytemuck::Zeroable;
use nalgebra::{SMatrix, SVector};
use psyne::{ElemType, Message, PsyneMessage};
use psyne_schemas::{
    Embedding64, Embedding128, Embedding256, Embedding512, Embedding768, Embedding1024, Gradient,
    Matrix,
};

/// A non-square matrix in both storage forms, plus a vector.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Layer {
    /// 3 rows x 2 columns, nested: `w[j][i]` is `(i, j)`.
    w: [[f32; 3]; 2],
    /// 2 rows x 3 columns, flat: `f[i + j * 2]` is `(i, j)`.
    #[psyne(matrix(rows = 2, cols = 3))]
    f: [f32; 6],
    x: [f32; 2],
    tag: u32,
    _pad: u32,
}

fn layer() -> Layer {
    let mut l = Layer::zeroed();
    for (k, v) in l.w.as_flattened_mut().iter_mut().enumerate() {
        *v = k as f32;
    }
    for (k, v) in l.f.iter_mut().enumerate() {
        *v = 10.0 + k as f32;
    }
    l.x = [1.0, -2.0];
    l
}

#[test]
fn nested_matrix_maps_element_i_j_to_x_j_i() {
    let l = layer();
    let m = l.w_matrix();
    assert_eq!(m.shape(), (3, 2));
    for i in 0..3 {
        for j in 0..2 {
            assert_eq!(m[(i, j)], l.w[j][i], "({i}, {j})");
        }
    }
    // Spot values: column 1 is w[1] = [3, 4, 5].
    assert_eq!(m[(0, 1)], 3.0);
    assert_eq!(m[(2, 1)], 5.0);
}

#[test]
fn flat_matrix_maps_element_i_j_to_x_i_plus_j_rows() {
    let l = layer();
    let m = l.f_matrix();
    assert_eq!(m.shape(), (2, 3));
    for i in 0..2 {
        for j in 0..3 {
            assert_eq!(m[(i, j)], l.f[i + j * 2], "({i}, {j})");
        }
    }
    assert_eq!(m[(1, 2)], 15.0);
}

#[test]
fn views_are_views_writes_change_message_bytes() {
    let mut l = layer();
    let before = bytemuck::bytes_of(&l).to_vec();
    l.w_matrix_mut()[(2, 0)] = 99.0; // w[0][2]
    l.f_matrix_mut()[(0, 2)] = -7.0; // f[0 + 2 * 2]
    l.x_vector_mut()[1] = 42.0;
    assert_eq!(l.w[0][2], 99.0);
    assert_eq!(l.f[4], -7.0);
    assert_eq!(l.x[1], 42.0);
    let after = bytemuck::bytes_of(&l);
    let changed = before.iter().zip(after).filter(|(a, b)| a != b).count();
    assert!(changed >= 3, "only {changed} bytes changed");
    // The view points at the field itself: same address, no copy.
    assert_eq!(l.w_matrix().as_ptr(), l.w.as_ptr().cast::<f32>());
    assert_eq!(l.x_vector().as_ptr(), l.x.as_ptr());
}

#[test]
fn matrix_view_times_vector_view_matches_naive_loop() {
    let l = layer();
    let y = l.w_matrix() * l.x_vector(); // (3x2) * (2) -> 3
    for i in 0..3 {
        let expect: f32 = (0..2).map(|j| l.w[j][i] * l.x[j]).sum();
        assert_eq!(y[i], expect);
    }
}

#[test]
fn matrix_view_times_matrix_view_matches_naive_loop() {
    let l = layer();
    let p = l.w_matrix() * l.f_matrix(); // (3x2) * (2x3) -> 3x3
    for i in 0..3 {
        for j in 0..3 {
            let expect: f32 = (0..2).map(|k| l.w[k][i] * l.f[k + j * 2]).sum();
            assert_eq!(p[(i, j)], expect, "({i}, {j})");
        }
    }
    // Transposed product through the views, and the result written into a view in place.
    let mut out = Matrix::<2, 2>::zeroed();
    out.data_matrix_mut()
        .gemm(1.0, &l.f_matrix(), &l.w_matrix(), 0.0);
    let expect = SMatrix::<f32, 2, 3>::from_column_slice(&l.f)
        * SMatrix::<f32, 3, 2>::from_column_slice(l.w.as_flattened());
    assert_eq!(out.data_matrix(), expect);
}

#[test]
fn dense_layer_on_schema_types() {
    // The computation users write: y = W x on a received embedding, into an outgoing message.
    let mut w = Matrix::<8, 64>::zeroed();
    for (k, v) in w.data.as_flattened_mut().iter_mut().enumerate() {
        *v = (k % 7) as f32 - 3.0;
    }
    let mut x = Embedding64::zeroed();
    for (k, v) in x.data_vector_mut().iter_mut().enumerate() {
        *v = k as f32 / 64.0;
    }
    let mut y = Matrix::<8, 1>::zeroed();
    y.data_matrix_mut()
        .column_mut(0)
        .gemv(1.0, &w.data_matrix(), &x.data_vector(), 0.0);
    let owned_w = SMatrix::<f32, 8, 64>::from_column_slice(w.data.as_flattened());
    let owned_x = SVector::<f32, 64>::from_column_slice(&x.data);
    let expect = owned_w * owned_x;
    for i in 0..8 {
        assert!((y.data[0][i] - expect[i]).abs() < 1e-4);
    }
}

#[test]
fn row_major_copies_round_trip_and_reject_wrong_lengths() {
    let mut l = Layer::zeroed();
    // Row-major 3x2: rows [1 2], [3 4], [5 6].
    let rm = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    l.w_from_row_major(&rm).unwrap();
    assert_eq!(l.w, [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]);
    assert_eq!(l.w_matrix()[(2, 1)], 6.0);
    let mut back = [0.0; 6];
    l.w_to_row_major(&mut back).unwrap();
    assert_eq!(back, rm);

    // Flat 2x3 field: rows [1 2 3], [4 5 6] -> columns [1 4], [2 5], [3 6].
    l.f_from_row_major(&rm).unwrap();
    assert_eq!(l.f, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);

    let err = l.w_from_row_major(&[1.0; 5]).unwrap_err();
    assert_eq!(
        err,
        psyne::LengthMismatch {
            field: "w",
            expected: 6,
            found: 5
        }
    );
    assert_eq!(
        l.w,
        [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]],
        "unchanged on error"
    );
    let mut short = [9.0; 4];
    let err = l.f_to_row_major(&mut short).unwrap_err();
    assert_eq!((err.expected, err.found), (6, 4));
    assert_eq!(short, [9.0; 4], "unchanged on error");
    assert!(err.to_string().contains("field `f` holds 6 elements"));
}

#[test]
fn field_schema_records_names_types_shapes_offsets_sizes() {
    let f = Layer::FIELDS;
    let names: Vec<_> = f.iter().map(|f| f.name).collect();
    assert_eq!(names, ["w", "f", "x", "tag", "_pad"]);
    assert_eq!(f[0].shape.as_slice(), &[3, 2]);
    assert_eq!(
        f[1].shape.as_slice(),
        &[2, 3],
        "matrix annotation gives rows, cols"
    );
    assert_eq!(f[2].shape.as_slice(), &[2]);
    assert_eq!(f[3].shape.as_slice(), &[] as &[usize]);
    assert_eq!(f[0].elem, ElemType::F32);
    assert_eq!(f[3].elem, ElemType::U32);
    let offsets: Vec<_> = f.iter().map(|f| (f.offset, f.size)).collect();
    assert_eq!(offsets, [(0, 24), (24, 24), (48, 8), (56, 4), (60, 4)]);
    let s = Layer::schema();
    assert_eq!((s.size, s.align, s.name), (64, 4, "Layer"));
}

/// The golden id: FNV-1a 64 of "Embedding256", computed independently. If this fails, every
/// peer built with an older psyne would reject this one: change the hash only on purpose.
#[test]
fn golden_type_id_of_embedding256() {
    assert_eq!(Embedding256::TYPE_ID, 0x500b_575b_c619_e9db);
    assert_eq!(Embedding256::NAME, "Embedding256");
}

mod v1 {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "Sample")]
    pub struct Sample {
        pub a: [f32; 4],
        pub b: u32,
        pub c: u32,
    }
}
mod renamed {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "Sample")]
    pub struct Sample {
        pub a: [f32; 4],
        pub b: u32,
        pub d: u32,
    }
}
mod reordered {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "Sample")]
    pub struct Sample {
        pub a: [f32; 4],
        pub c: u32,
        pub b: u32,
    }
}
mod retyped {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "Sample")]
    pub struct Sample {
        pub a: [f32; 4],
        pub b: i32,
        pub c: u32,
    }
}
mod reshaped {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    #[psyne(name = "Sample")]
    pub struct Sample {
        #[psyne(matrix(rows = 2, cols = 2))]
        pub a: [f32; 4],
        pub b: u32,
        pub c: u32,
    }
}

#[test]
fn fingerprint_changes_on_rename_reorder_retype_reshape_but_type_id_does_not() {
    let base = (v1::Sample::TYPE_ID, v1::Sample::FINGERPRINT);
    let others = [
        (
            "renamed",
            renamed::Sample::TYPE_ID,
            renamed::Sample::FINGERPRINT,
        ),
        (
            "reordered",
            reordered::Sample::TYPE_ID,
            reordered::Sample::FINGERPRINT,
        ),
        (
            "retyped",
            retyped::Sample::TYPE_ID,
            retyped::Sample::FINGERPRINT,
        ),
        (
            "reshaped",
            reshaped::Sample::TYPE_ID,
            reshaped::Sample::FINGERPRINT,
        ),
    ];
    for (what, id, fp) in others {
        assert_eq!(id, base.0, "{what}: type id follows the name");
        assert_ne!(fp, base.1, "{what}: fingerprint must change");
    }
    assert_eq!(base.0, psyne::fnv1a64(b"Sample"));
    // And the fingerprint is a pure function of the layout: recomputing it gives the same value.
    assert_eq!(
        psyne::message::fingerprint(v1::Sample::FIELDS, 24, 4),
        v1::Sample::FINGERPRINT
    );
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
#[psyne(type_id = 0xfeed)]
struct Explicit {
    v: u64,
}

#[test]
fn explicit_type_id_is_used_verbatim() {
    assert_eq!(Explicit::TYPE_ID, 0xfeed);
    assert_eq!(Explicit::NAME, "Explicit");
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Point {
    xyz: [f32; 3],
    id: u32,
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Cloud {
    centre: Point,
    points: [Point; 4],
    count: u32,
    _pad: u32,
    norms: [f64; 4],
}

#[test]
fn nested_messages_and_arrays_of_messages() {
    let f = Cloud::FIELDS;
    let nested = ElemType::Message {
        name: "Point",
        fingerprint: Point::FINGERPRINT,
    };
    assert_eq!(f[0].elem, nested);
    assert_eq!(f[0].shape.as_slice(), &[] as &[usize]);
    assert_eq!(f[1].elem, nested);
    assert_eq!(f[1].shape.as_slice(), &[4]);
    assert_eq!((f[1].offset, f[1].size), (16, 64));
    assert_eq!(f[4].offset, 88);
    assert_eq!(core::mem::size_of::<Cloud>(), 120);

    let mut c = Cloud::zeroed();
    c.points[2].xyz_vector_mut().fill(2.5);
    c.centre.xyz = [1.0, 2.0, 3.0];
    c.norms_vector_mut()[3] = 9.0;
    assert_eq!(c.points[2].xyz, [2.5; 3]);
    assert_eq!(c.norms[3], 9.0);
    assert_eq!(c.centre.xyz_vector().sum(), 6.0);
    // Bytes round-trip through the Pod impl.
    let copy: Cloud = bytemuck::pod_read_unaligned(bytemuck::bytes_of(&c));
    assert_eq!(copy.points[2].xyz, [2.5; 3]);
}

mod inner_changed {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    pub struct Point {
        pub xyz: [f32; 3],
        pub label: u32,
    }
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    pub struct Wrapper {
        pub p: Point,
    }
}
mod inner_same {
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    pub struct Point {
        pub xyz: [f32; 3],
        pub id: u32,
    }
    #[derive(Clone, Copy, psyne::PsyneMessage)]
    #[repr(C)]
    pub struct Wrapper {
        pub p: Point,
    }
}

#[test]
fn changing_a_nested_message_changes_the_outer_fingerprint() {
    assert_eq!(inner_same::Point::FINGERPRINT, Point::FINGERPRINT);
    assert_ne!(
        inner_changed::Wrapper::FINGERPRINT,
        inner_same::Wrapper::FINGERPRINT
    );
    assert_eq!(
        inner_changed::Wrapper::TYPE_ID,
        inner_same::Wrapper::TYPE_ID
    );
}

#[test]
fn const_generic_instantiations_have_their_own_ids_and_layouts() {
    assert_ne!(Matrix::<2, 3>::TYPE_ID, Matrix::<3, 2>::TYPE_ID);
    assert_ne!(Matrix::<2, 3>::FINGERPRINT, Matrix::<3, 2>::FINGERPRINT);
    assert_eq!(Matrix::<2, 3>::NAME, "Matrix");
    assert_eq!(Matrix::<2, 3>::FIELDS[0].shape.as_slice(), &[2, 3]);
    assert_eq!(Gradient::<16>::FIELDS[1].offset, 64);
    assert_eq!(Gradient::<16>::FIELDS[5].name, "learning_rate");
    // The id is the name's hash combined with the parameters, in order.
    let expect =
        psyne::message::fnv1a64_u64(psyne::message::fnv1a64_u64(psyne::fnv1a64(b"Matrix"), 2), 3);
    assert_eq!(Matrix::<2, 3>::TYPE_ID, expect);

    let mut m = Matrix::<2, 3>::zeroed();
    m.data_from_row_major(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    assert_eq!(m.data, [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]);
    assert_eq!(m.data_matrix()[(1, 0)], 4.0);
}

/// A user const-generic type with a flat matrix whose shape uses the parameters.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Square<const N: usize> {
    #[psyne(matrix(rows = N, cols = 1))]
    diag: [f64; N],
    scale: f64,
}

#[test]
fn user_const_generic_with_parameterised_matrix_annotation() {
    let mut s = Square::<3>::zeroed();
    s.diag_matrix_mut()[(2, 0)] = 4.0;
    assert_eq!(s.diag, [0.0, 0.0, 4.0]);
    assert_ne!(Square::<3>::TYPE_ID, Square::<4>::TYPE_ID);
    assert_eq!(Square::<5>::FIELDS[0].shape.as_slice(), &[5, 1]);
}

/// Const-generic shapes the padding proof accepts (each length-dependent array's element size a
/// multiple of the struct's alignment; the fixed fields without padding), including a concrete
/// nested message and `repr(align)`.
#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Packet<const N: usize> {
    len: u32,
    bytes: [[u8; 4]; N],
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C)]
struct Mixed<const R: usize, const C: usize> {
    scale: f64,
    w: [[f64; R]; C],
    e: Embedding64,
}

#[derive(Clone, Copy, PsyneMessage)]
#[repr(C, align(16))]
struct Lanes<const N: usize> {
    lanes: [[f32; 4]; N],
}

/// The sum of the field sizes in `T`'s schema: equal to `size_of::<T>()` iff no padding.
fn field_bytes<T: Message>() -> usize {
    T::FIELDS.iter().map(|f| f.size).sum()
}

#[test]
fn const_generic_messages_accepted_by_the_padding_proof_have_none() {
    assert_eq!(size_of::<Packet<0>>(), field_bytes::<Packet<0>>());
    assert_eq!(size_of::<Packet<3>>(), field_bytes::<Packet<3>>());
    assert_eq!(size_of::<Mixed<0, 0>>(), field_bytes::<Mixed<0, 0>>());
    assert_eq!(size_of::<Mixed<1, 3>>(), field_bytes::<Mixed<1, 3>>());
    assert_eq!(size_of::<Mixed<5, 2>>(), field_bytes::<Mixed<5, 2>>());
    assert_eq!(size_of::<Lanes<1>>(), 16);
    assert_eq!(size_of::<Lanes<3>>(), field_bytes::<Lanes<3>>());
    let p = Packet::<1> {
        len: 4,
        bytes: [[1, 2, 3, 4]],
    };
    assert_eq!(bytemuck::bytes_of(&p), &[4, 0, 0, 0, 1, 2, 3, 4]);
}

#[test]
fn all_predeclared_ids_and_fingerprints_are_pairwise_distinct() {
    let ids = [
        (
            "Embedding64",
            Embedding64::TYPE_ID,
            Embedding64::FINGERPRINT,
        ),
        (
            "Embedding128",
            Embedding128::TYPE_ID,
            Embedding128::FINGERPRINT,
        ),
        (
            "Embedding256",
            Embedding256::TYPE_ID,
            Embedding256::FINGERPRINT,
        ),
        (
            "Embedding512",
            Embedding512::TYPE_ID,
            Embedding512::FINGERPRINT,
        ),
        (
            "Embedding768",
            Embedding768::TYPE_ID,
            Embedding768::FINGERPRINT,
        ),
        (
            "Embedding1024",
            Embedding1024::TYPE_ID,
            Embedding1024::FINGERPRINT,
        ),
        (
            "Matrix<4,4>",
            Matrix::<4, 4>::TYPE_ID,
            Matrix::<4, 4>::FINGERPRINT,
        ),
        (
            "Matrix<8,8>",
            Matrix::<8, 8>::TYPE_ID,
            Matrix::<8, 8>::FINGERPRINT,
        ),
        (
            "Matrix<4,8>",
            Matrix::<4, 8>::TYPE_ID,
            Matrix::<4, 8>::FINGERPRINT,
        ),
        (
            "Matrix<8,4>",
            Matrix::<8, 4>::TYPE_ID,
            Matrix::<8, 4>::FINGERPRINT,
        ),
        (
            "Matrix<256,256>",
            Matrix::<256, 256>::TYPE_ID,
            Matrix::<256, 256>::FINGERPRINT,
        ),
        (
            "Gradient<64>",
            Gradient::<64>::TYPE_ID,
            Gradient::<64>::FINGERPRINT,
        ),
        (
            "Gradient<256>",
            Gradient::<256>::TYPE_ID,
            Gradient::<256>::FINGERPRINT,
        ),
        (
            "Gradient<1024>",
            Gradient::<1024>::TYPE_ID,
            Gradient::<1024>::FINGERPRINT,
        ),
    ];
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a.1, b.1, "type ids of {} and {} collide", a.0, b.0);
            assert_ne!(a.2, b.2, "fingerprints of {} and {} collide", a.0, b.0);
        }
    }
}

#[test]
fn schema_sizes_have_no_padding() {
    assert_eq!(core::mem::size_of::<Embedding256>(), 256 * 4 + 8);
    assert_eq!(core::mem::size_of::<Matrix<3, 5>>(), 15 * 4 + 8);
    assert_eq!(core::mem::size_of::<Gradient<10>>(), 20 * 4 + 16);
    let total: usize = Gradient::<10>::FIELDS.iter().map(|f| f.size).sum();
    assert_eq!(total, core::mem::size_of::<Gradient<10>>());
}

#[test]
fn gradient_momentum_update_in_place() {
    let mut g = Gradient::<4>::zeroed();
    g.grad = [1.0, 2.0, -1.0, 0.0];
    g.momentum = [0.0, 1.0, 1.0, 4.0];
    g.apply_momentum(0.5);
    assert_eq!(g.momentum, [0.5, 1.5, 0.0, 2.0]);
    g.apply_momentum(1.0);
    assert_eq!(g.momentum, [0.5, 1.5, 0.0, 2.0], "beta = 1 keeps m");
    g.apply_momentum(0.0);
    assert_eq!(g.momentum, g.grad, "beta = 0 copies g");
}

#[cfg(feature = "half")]
mod half_precision {
    use psyne::{ElemType, Message, PsyneMessage};

    #[derive(Clone, Copy, PsyneMessage)]
    #[repr(C)]
    struct Activations {
        #[psyne(matrix(rows = 2, cols = 2))]
        x: [half::f16; 4],
        y: [half::bf16; 4],
    }

    #[test]
    fn f16_and_bf16_fields_have_schemas_and_views() {
        assert_eq!(Activations::FIELDS[0].elem, ElemType::F16);
        assert_eq!(Activations::FIELDS[1].elem, ElemType::BF16);
        assert_eq!(core::mem::size_of::<Activations>(), 16);
        let mut a: Activations = bytemuck::Zeroable::zeroed();
        a.x_matrix_mut()[(1, 1)] = half::f16::from_f32(1.5);
        assert_eq!(a.x[3].to_f32(), 1.5);
        a.y_vector_mut()[0] = half::bf16::from_f32(-2.0);
        assert_eq!(a.y[0].to_f32(), -2.0);
    }
}

/// The compile-time message builder behind the padding errors: decimal numbers, "byte(s)", and
/// parts that do not fit dropped whole (so the text stays valid UTF-8).
#[test]
fn padding_messages_are_assembled_with_their_numbers() {
    use psyne::__private::{ConstMessage, group_for_alignment};
    const M: ConstMessage = ConstMessage::new()
        .str("has ")
        .bytes(1)
        .str(", ")
        .bytes(0)
        .str(", ")
        .num(usize::MAX);
    assert_eq!(M.as_str(), format!("has 1 byte, 0 bytes, {}", usize::MAX));
    let long = "é".repeat(400); // 800 bytes
    let m = ConstMessage::new().str(&long).str(&long).str("end");
    assert_eq!(m.as_str(), format!("{long}end"));
    assert_eq!(group_for_alignment(1, 4), 4);
    assert_eq!(group_for_alignment(12, 8), 2);
    assert_eq!(group_for_alignment(4, 16), 4);
    assert_eq!(group_for_alignment(8, 8), 1);
    assert_eq!(group_for_alignment(0, 8), 1);
}
