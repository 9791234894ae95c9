//! Variable-size tensors (issue 14): round trips of every element type and of ranks 0 to 8
//! (zero-sized dimensions included), the user header, nalgebra (and ndarray) views, raw
//! channels carrying tensors beside other messages, typed errors for every bad shape and every
//! corrupt description (hand-written bytes through a raw channel), shared memory in one process
//! and across two, and property tests of random shapes against the record length.

use proptest::prelude::*;
use psyne::tensor::{
    DESCRIPTION_SIZE, FORMAT_VERSION, HEADER_MIN_OFFSET, HEADER_TAG_OFFSET, HeaderSpec, MAGIC,
    MAX_RANK, TensorDescription, TensorLayout,
};
use psyne::{
    Channel, DType, Message, PsyneMessage, RawConsumer, RawProducer, RecvError, SendError,
    TENSOR_TYPE_ID, TensorElement, TensorError, TensorRef, TensorSendError,
};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
#[psyne(name = "test.Batch")]
struct Batch {
    index: u64,
    layer: u32,
    step: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
struct Other {
    value: u64,
}

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "psyne-tensor-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The example, verbatim apart from the error plumbing.
#[test]
fn contract_example() -> Result<(), Box<dyn std::error::Error>> {
    let (mut tx, mut rx) = Channel::tensors().capacity_bytes(8 << 20).build()?; // TensorProducer, TensorConsumer
    let mut t = tx.allocate_tensor::<f32>(&[32, 256])?; // TensorLoan<'_, f32>, in ring memory
    t.as_mut_slice().fill(0.5); // 32 * 256 elements
    assert_eq!(t.as_slice().len(), 32 * 256);
    t.send();
    let r = rx.recv()?; // TensorReceived<'_>
    let v = r.view::<f32>()?; // TensorView<'_, f32>; Err(TensorError::DType{..}) otherwise
    assert_eq!(v.shape(), &[32, 256]); // shape() -> &[usize]
    let x: &[f32] = v.as_slice(); // the elements, in place
    assert_eq!(x.len(), 32 * 256);
    assert!(x.iter().all(|&e| e == 0.5));
    let m = v.matrix(); // nalgebra view of a 2-D tensor, no copy
    assert_eq!(
        m.shape(),
        (256, 32),
        "the column-major view is the transpose"
    );
    assert_eq!(m.as_ptr(), x.as_ptr(), "no copy");
    assert_eq!(
        r.view::<f64>().unwrap_err(),
        TensorError::DType {
            expected: DType::F64,
            found: DType::F32
        }
    );
    assert_eq!(r.message_header().type_id, TENSOR_TYPE_ID);
    assert_eq!(
        r.message_header().len as usize,
        64 + 32 * 256 * 4,
        "description + elements"
    );
    Ok(())
}

/// Shapes of every rank 0..=8, with zero-sized dimensions at the start, middle and end.
fn shapes() -> Vec<Vec<usize>> {
    vec![
        vec![],
        vec![0],
        vec![1],
        vec![7],
        vec![3, 5],
        vec![0, 5],
        vec![5, 0],
        vec![2, 3, 4],
        vec![2, 0, 4],
        vec![2, 1, 3, 2],
        vec![1, 2, 3, 2, 1],
        vec![2, 2, 2, 2, 2, 2],
        vec![1, 3, 1, 2, 1, 2, 1],
        vec![2, 1, 2, 1, 2, 1, 2, 3],
        vec![2, 1, 2, 1, 0, 1, 2, 3],
        vec![0; 8],
    ]
}

/// Sends every shape of `shapes()` with elements `value(i)` and checks them on the other side
/// (through a tensor channel and, raw, through `RawReceived::tensor`).
fn round_trip<E: TensorElement>(value: impl Fn(usize) -> E) {
    let (mut tx, mut rx) = Channel::tensors().capacity_bytes(1 << 16).build().unwrap();
    let (mut rtx, mut rrx) = Channel::raw().capacity_bytes(1 << 16).build().unwrap();
    for shape in shapes() {
        let count: usize = shape.iter().product();
        let mut t = tx.allocate_tensor::<E>(&shape).unwrap();
        assert_eq!(t.shape(), &shape[..]);
        assert_eq!(t.len(), count);
        assert_eq!(t.dtype(), E::DTYPE);
        for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
            *e = value(i);
        }
        t.send();
        let mut t = rtx.allocate_tensor::<E>(&shape).unwrap();
        for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
            *e = value(i);
        }
        t.send();

        let r = rx.try_recv().unwrap();
        assert_eq!(r.dtype(), Ok(E::DTYPE));
        assert_eq!(r.info().unwrap().shape(), &shape[..]);
        assert_eq!(r.bytes().len(), 64 + count * E::DTYPE.size());
        let v = r.view::<E>().unwrap();
        assert_eq!(v.shape(), &shape[..], "{:?}", E::DTYPE);
        assert_eq!(v.rank(), shape.len());
        assert_eq!(v.len(), count);
        assert_eq!(v.is_empty(), count == 0);
        assert_eq!(
            v.as_slice().as_ptr() as usize % 64,
            0,
            "elements 64-byte aligned"
        );
        for (i, e) in v.as_slice().iter().enumerate() {
            assert_eq!(*e, value(i), "{:?} {shape:?} element {i}", E::DTYPE);
        }
        assert_eq!(v.matrix().len(), count);
        assert_eq!(r.header::<Batch>().unwrap_err(), TensorError::NoHeader);

        let raw = rrx.try_recv().unwrap();
        let tensor = raw.tensor().unwrap();
        assert_eq!(tensor.dtype(), E::DTYPE);
        assert_eq!(tensor.shape(), &shape[..]);
        assert_eq!(tensor.view::<E>().unwrap().as_slice(), v.as_slice());
    }
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
}

#[test]
fn every_dtype_and_rank_round_trips() {
    round_trip::<f32>(|i| i as f32 * 0.5 - 3.0);
    round_trip::<f64>(|i| i as f64 * -0.25 + 1e10);
    round_trip::<i8>(|i| (i as i8).wrapping_mul(-3));
    round_trip::<u8>(|i| (i as u8).wrapping_mul(7));
    round_trip::<i16>(|i| (i as i16).wrapping_mul(-300));
    round_trip::<u16>(|i| (i as u16).wrapping_mul(3000));
    round_trip::<i32>(|i| -(i as i32) * 100_000);
    round_trip::<u32>(|i| (i as u32).wrapping_mul(0x9E37_79B9));
    round_trip::<i64>(|i| -(i as i64) << 40);
    round_trip::<u64>(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    #[cfg(feature = "half")]
    {
        round_trip::<half::f16>(|i| half::f16::from_f32(i as f32 * 0.5));
        round_trip::<half::bf16>(|i| half::bf16::from_f32(i as f32 * -2.0));
    }
}

#[test]
fn dtypes_of_the_elements() {
    assert_eq!(<f32 as TensorElement>::DTYPE, DType::F32);
    assert_eq!(<u64 as TensorElement>::DTYPE, DType::U64);
    #[cfg(feature = "half")]
    {
        assert_eq!(<half::f16 as TensorElement>::DTYPE, DType::F16);
        assert_eq!(<half::bf16 as TensorElement>::DTYPE, DType::BF16);
    }
    for d in DType::ALL {
        assert_eq!(DType::from_code(d.code()), Some(d));
    }
}

#[test]
fn row_major_tensor_is_the_transposed_nalgebra_matrix() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    // W = [[1, 2, 3], [4, 5, 6]] row-major, [2, 3].
    let mut t = tx.allocate_tensor::<f32>(&[2, 3]).unwrap();
    t.as_mut_slice()
        .copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(t.matrix().shape(), (3, 2));
    t.send();
    let r = rx.recv().unwrap();
    let v = r.view::<f32>().unwrap();
    let m = v.matrix();
    assert_eq!(m.shape(), (3, 2));
    for i in 0..2 {
        for j in 0..3 {
            assert_eq!(m[(j, i)], *v.get(&[i, j]).unwrap(), "tensor [{i}, {j}]");
        }
    }
    assert_eq!(v.get(&[1, 2]), Some(&6.0));
    assert_eq!(v.get(&[2, 0]), None);
    assert_eq!(v.get(&[1]), None);
    // W x, with x = [1, 0, 2]: [7, 16].
    let x = nalgebra::DVector::from_vec(vec![1.0f32, 0.0, 2.0]);
    assert_eq!(m.tr_mul(&x).as_slice(), &[7.0, 16.0]);
    // The owned row-major-semantics copy.
    let w = m.transpose();
    assert_eq!(w.shape(), (2, 3));
    assert_eq!(w[(1, 0)], 4.0);
    drop(r);

    // Rank 3 reads as [(2 * 2), 3]; rank 1 as [1, n]; rank 0 as [1, 1].
    for (shape, nalgebra_shape) in [
        (vec![2usize, 2, 3], (3usize, 4usize)),
        (vec![5], (5, 1)),
        (vec![], (1, 1)),
        (vec![4, 0], (0, 4)),
        (vec![0, 4], (4, 0)),
    ] {
        let mut t = tx.allocate_tensor::<i32>(&shape).unwrap();
        for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
            *e = i as i32;
        }
        t.send();
        let r = rx.recv().unwrap();
        let v = r.view::<i32>().unwrap();
        let m = v.matrix();
        assert_eq!(m.shape(), nalgebra_shape, "{shape:?}");
        let cols = nalgebra_shape.0;
        for (k, e) in v.as_slice().iter().enumerate() {
            assert_eq!(m[(k % cols, k / cols)], *e);
        }
    }
}

#[test]
fn matrix_mut_writes_row_major() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    let a = nalgebra::Matrix2x3::new(1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0); // 2 x 3 column-major
    let mut t = tx.allocate_tensor::<f64>(&[2, 3]).unwrap();
    t.matrix_mut().tr_copy_from(&a);
    assert_eq!(t.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "row-major");
    t.send();
    let r = rx.recv().unwrap();
    assert_eq!(r.view::<f64>().unwrap().matrix().transpose(), a);
}

#[test]
fn rows_of_a_compile_time_width() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    // [2, 3, 4]: six rows of four, written through rows_mut, read three ways.
    let mut t = tx.allocate_tensor::<f32>(&[2, 3, 4]).unwrap();
    assert_eq!(
        t.rows_mut::<3>().unwrap_err(),
        TensorError::RowWidth {
            expected: 3,
            found: Some(4)
        }
    );
    let rows = t.rows_mut::<4>().unwrap();
    assert_eq!(rows.len(), 6);
    for (r, row) in rows.iter_mut().enumerate() {
        for (k, x) in row.iter_mut().enumerate() {
            *x = (10 * r + k) as f32;
        }
    }
    t.send();
    // Every failure below happens twice: once the description is remembered, once not.
    for _ in 0..2 {
        let r = rx.recv().unwrap();
        let rows = r.rows::<f32, 4>().unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[5], [50.0, 51.0, 52.0, 53.0]);
        let v = r.view::<f32>().unwrap();
        assert_eq!(v.rows::<4>().unwrap(), rows);
        assert_eq!(v.as_slice()[4 * 5 + 2], 52.0);
        assert_eq!(
            r.rows::<f32, 8>().unwrap_err(),
            TensorError::RowWidth {
                expected: 8,
                found: Some(4)
            }
        );
        assert!(matches!(
            r.rows::<u32, 4>(),
            Err(TensorError::DType {
                expected: DType::U32,
                found: DType::F32
            })
        ));
        drop(r);
        let mut t = tx.allocate_tensor::<f32>(&[2, 3, 4]).unwrap();
        t.as_mut_slice()
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (10 * (i / 4) + i % 4) as f32);
        t.send();
    }
    // A scalar has no rows; an empty batch has zero of them.
    let mut t = tx.allocate_tensor::<f32>(&[]).unwrap();
    let err = t.rows_mut::<1>().unwrap_err();
    assert_eq!(
        err,
        TensorError::RowWidth {
            expected: 1,
            found: None
        }
    );
    assert!(err.to_string().contains("scalar"), "{err}");
    t.send();
    let _ = rx.recv().unwrap(); // the [2, 3, 4] tensor sent last in the loop
    let r = rx.recv().unwrap();
    assert!(matches!(
        r.rows::<f32, 1>(),
        Err(TensorError::RowWidth { found: None, .. })
    ));
    assert_eq!(
        r.view::<f32>().unwrap().rows::<1>().unwrap_err(),
        TensorError::RowWidth {
            expected: 1,
            found: None
        }
    );
    drop(r);
    let mut t = tx.allocate_tensor::<f32>(&[0, 256]).unwrap();
    assert!(t.rows_mut::<256>().unwrap().is_empty());
    t.send();
    assert!(rx.recv().unwrap().rows::<f32, 256>().unwrap().is_empty());
    // A last dimension of 0 is a width like any other: rows of 4 are refused, by every path.
    for _ in 0..2 {
        let t = tx.allocate_tensor::<f32>(&[3, 0]).unwrap();
        t.send();
        let r = rx.recv().unwrap();
        let want = TensorError::RowWidth {
            expected: 4,
            found: Some(0),
        };
        assert_eq!(r.rows::<f32, 4>().unwrap_err(), want);
        assert_eq!(r.view::<f32>().unwrap().rows::<4>().unwrap_err(), want);
        let parsed = psyne::tensor::TensorRef::parse(r.bytes()).unwrap();
        assert_eq!(parsed.view::<f32>().unwrap().rows::<4>().unwrap_err(), want);
        assert_eq!(parsed.view::<f32>().unwrap().shape(), &[3, 0]);
    }
}

#[test]
fn arrays_of_a_compile_time_element_count() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    // [3, 4]: twelve elements, whatever the shape, written and read as one array.
    let mut t = tx.allocate_tensor::<u32>(&[3, 4]).unwrap();
    let err = t.as_array_mut::<4>().unwrap_err();
    assert_eq!(
        err,
        TensorError::ElementCount {
            expected: 4,
            found: 12
        }
    );
    assert!(err.to_string().contains("12 elements"), "{err}");
    // The failed call left the loan as it was.
    assert_eq!(t.shape(), &[3, 4]);
    let a: &mut [u32; 12] = t.as_array_mut::<12>().unwrap();
    for (i, x) in a.iter_mut().enumerate() {
        *x = 7 * i as u32;
    }
    t.send();
    // Twice: once the description is not remembered, once it is.
    for round in 0..2 {
        let r = rx.recv().unwrap();
        let v = r.view::<u32>().unwrap();
        let a: &[u32; 12] = v.as_array::<12>().unwrap();
        assert_eq!(a[11], 77, "round {round}");
        assert_eq!(&a[..], v.as_slice());
        assert_eq!(
            v.as_array::<13>().unwrap_err(),
            TensorError::ElementCount {
                expected: 13,
                found: 12
            }
        );
        drop(r);
        let mut t = tx.allocate_tensor::<u32>(&[3, 4]).unwrap();
        t.as_mut_slice()
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = 7 * i as u32);
        t.send();
    }
    drop(rx.recv().unwrap());
    // A scalar is an array of one; an empty tensor of none.
    let mut t = tx.allocate_tensor::<f64>(&[]).unwrap();
    t.as_array_mut::<1>().unwrap()[0] = 2.5;
    t.send();
    let r = rx.recv().unwrap();
    assert_eq!(r.view::<f64>().unwrap().as_array::<1>().unwrap(), &[2.5]);
    drop(r);
    let mut t = tx.allocate_tensor::<f64>(&[4, 0]).unwrap();
    assert_eq!(t.as_array_mut::<0>().unwrap().len(), 0);
    t.send();
    let r = rx.recv().unwrap();
    let v = r.view::<f64>().unwrap();
    assert!(v.as_array::<0>().is_ok());
    assert!(v.as_array::<1>().is_err());
}

#[test]
fn user_header_round_trips_and_is_type_checked() {
    let (mut tx, mut rx) = Channel::tensors().timestamps(true).build().unwrap();
    let batch = Batch {
        index: 41,
        layer: 3,
        step: 9000,
    };
    let mut t = tx
        .allocate_tensor_with::<Batch, u16>(batch, &[4, 2])
        .unwrap();
    t.as_mut_slice().fill(7);
    t.send();
    tx.try_allocate_tensor_with::<Batch, u16>(batch, &[0])
        .unwrap()
        .send();
    tx.allocate_tensor_with_timeout::<Batch, u8>(batch, &[], Duration::from_secs(1))
        .unwrap()
        .send();

    let r = rx.recv().unwrap();
    assert_eq!(*r.header::<Batch>().unwrap(), batch);
    assert_eq!(r.tensor().unwrap().header_type_id(), Some(Batch::TYPE_ID));
    assert_eq!(
        r.header::<Other>().unwrap_err(),
        TensorError::HeaderType {
            expected: Other::TYPE_ID,
            found: Batch::TYPE_ID
        }
    );
    assert_eq!(r.view::<u16>().unwrap().as_slice(), &[7; 8]);
    assert_eq!(
        r.bytes().len(),
        128 + 16,
        "header (16 bytes) fits before byte 128"
    );
    assert!(r.message_header().timestamp_ns > 0);
    assert_eq!(r.message_header().sequence, 0);
    drop(r);
    for seq in 1..3 {
        let r = rx.recv().unwrap();
        assert_eq!(*r.header::<Batch>().unwrap(), batch);
        assert_eq!(r.message_header().sequence, seq);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, PsyneMessage)]
#[repr(C)]
struct Large {
    data: [u64; 20],
}

#[test]
fn a_large_header_moves_the_elements() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    let h = Large {
        data: core::array::from_fn(|i| i as u64 * 3),
    };
    let mut t = tx.allocate_tensor_with::<Large, f32>(h, &[3]).unwrap();
    t.as_mut_slice().copy_from_slice(&[1.0, 2.0, 3.0]);
    t.send();
    let r = rx.recv().unwrap();
    // The header at 80 (after the description and the header tag): 80 + 160 = 240, elements
    // at 256.
    assert_eq!(r.info().unwrap().element_offset(), 256);
    assert_eq!(r.bytes().len(), 256 + 12);
    assert_eq!(*r.header::<Large>().unwrap(), h);
    assert_eq!(r.view::<f32>().unwrap().as_slice(), &[1.0, 2.0, 3.0]);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let (mut tx, _rx) = Channel::tensors().capacity_bytes(4096).build().unwrap();
    assert_eq!(
        tx.allocate_tensor::<f32>(&[1; 9]).unwrap_err(),
        TensorSendError::Tensor(TensorError::RankTooLarge { rank: 9 })
    );
    assert_eq!(
        tx.allocate_tensor::<f32>(&[usize::MAX, 2]).unwrap_err(),
        TensorSendError::Tensor(TensorError::CountOverflow)
    );
    assert_eq!(
        tx.allocate_tensor::<u8>(&[1 << 40, 1 << 40, 0])
            .unwrap_err(),
        TensorSendError::Tensor(TensorError::CountOverflow),
        "zero elements, but the other dimensions overflow"
    );
    assert!(matches!(
        tx.allocate_tensor::<u64>(&[1 << 62]).unwrap_err(),
        TensorSendError::Tensor(TensorError::ByteSizeOverflow { .. })
    ));
    assert!(matches!(
        tx.allocate_tensor::<u8>(&[1 << 33]).unwrap_err(),
        TensorSendError::Tensor(TensorError::TooLarge { .. })
    ));
    // The description stores dimensions as u32s: an empty tensor cannot have a larger one.
    assert_eq!(
        tx.allocate_tensor::<u8>(&[0, 1 << 33]).unwrap_err(),
        TensorSendError::Tensor(TensorError::DimensionTooLarge { dimension: 1 << 33 })
    );
    let empty = TensorLayout::new(DType::U8, &[0, u32::MAX as usize], None).unwrap();
    assert_eq!(empty.shape(), &[0, u32::MAX as usize]);
    // Larger than the ring: 4096 - 96 bytes of payload at most.
    assert_eq!(tx.max_payload(), 4000);
    assert_eq!(
        tx.allocate_tensor::<f32>(&[1000]).unwrap_err(),
        TensorSendError::Send(SendError::TooLarge {
            len: 4064,
            max: 4000
        })
    );
    assert!(
        tx.allocate_tensor::<f32>(&[984]).is_ok(),
        "64 + 3936 = 4000"
    );
    let e = tx.allocate_tensor::<f32>(&[1; 9]).unwrap_err();
    assert!(e.to_string().contains("rank 9"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn full_timeout_and_disconnected() {
    let (mut tx, rx) = Channel::tensors().capacity_bytes(4096).build().unwrap();
    // 64 + 1024 = 1088 bytes: a 1152-byte record; three fit in 4096 - 64.
    for _ in 0..3 {
        tx.try_allocate_tensor::<f32>(&[256]).unwrap().send();
    }
    assert_eq!(
        tx.try_allocate_tensor::<f32>(&[256]).unwrap_err(),
        TensorSendError::Send(SendError::Full)
    );
    assert_eq!(
        tx.allocate_tensor_timeout::<f32>(&[256], Duration::from_millis(20))
            .unwrap_err(),
        TensorSendError::Send(SendError::Timeout)
    );
    drop(rx);
    assert_eq!(
        tx.allocate_tensor::<f32>(&[256]).unwrap_err(),
        TensorSendError::Send(SendError::Disconnected)
    );
    assert!(tx.is_disconnected());

    let (tx, mut rx) = Channel::tensors().build().unwrap();
    assert_eq!(rx.try_recv().unwrap_err(), RecvError::Empty);
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(10)).unwrap_err(),
        RecvError::Timeout
    );
    drop(tx);
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
}

#[test]
fn dropped_loan_publishes_nothing() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    {
        let _unsent = tx.allocate_tensor::<f32>(&[16]).unwrap();
    }
    let mut t = tx.allocate_tensor::<f32>(&[2]).unwrap();
    t.as_mut_slice().copy_from_slice(&[1.0, 2.0]);
    t.send();
    let r = rx.recv().unwrap();
    assert_eq!(r.view::<f32>().unwrap().as_slice(), &[1.0, 2.0]);
    assert_eq!(r.message_header().sequence, 0);
}

#[test]
fn raw_channels_carry_tensors_beside_other_messages() {
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(1 << 16).build().unwrap();
    let mut t = tx.allocate_tensor::<i32>(&[2, 2]).unwrap();
    t.as_mut_slice().copy_from_slice(&[1, 2, 3, 4]);
    t.send();
    let mut m = tx.allocate::<Other>().unwrap();
    m.value = 5;
    m.send();
    tx.send_bytes(99, b"hello").unwrap();
    tx.try_allocate_tensor_with::<Batch, f64>(
        Batch {
            index: 1,
            layer: 2,
            step: 3,
        },
        &[1],
    )
    .unwrap()
    .send();

    let r = rx.recv().unwrap();
    assert_eq!(r.type_id(), TENSOR_TYPE_ID);
    assert_eq!(
        r.tensor().unwrap().view::<i32>().unwrap().as_slice(),
        &[1, 2, 3, 4]
    );
    drop(r);
    let r = rx.recv().unwrap();
    assert_eq!(
        r.tensor().unwrap_err(),
        TensorError::NotATensor {
            type_id: Other::TYPE_ID
        }
    );
    assert_eq!(r.downcast::<Other>().unwrap().value, 5);
    drop(r);
    let r = rx.recv().unwrap();
    assert_eq!(
        r.tensor().unwrap_err(),
        TensorError::NotATensor { type_id: 99 }
    );
    drop(r);
    let r = rx.recv().unwrap();
    assert_eq!(r.tensor().unwrap().header::<Batch>().unwrap().step, 3);
}

#[test]
fn a_tensor_consumer_reports_records_that_are_not_tensors() {
    let (tx, mut rx) = Channel::tensors().build().unwrap();
    let mut raw: RawProducer = tx.into_raw();
    raw.send_bytes(7, &[0u8; 200]).unwrap();
    let r = rx.recv().unwrap();
    assert_eq!(
        r.info().unwrap_err(),
        TensorError::NotATensor { type_id: 7 }
    );
    assert_eq!(
        r.view::<f32>().unwrap_err(),
        TensorError::NotATensor { type_id: 7 }
    );
    assert_eq!(
        r.dtype().unwrap_err(),
        TensorError::NotATensor { type_id: 7 }
    );
    assert_eq!(
        r.header::<Batch>().unwrap_err(),
        TensorError::NotATensor { type_id: 7 }
    );
    assert_eq!(r.bytes().len(), 200);
    drop(r);

    // A corrupt tensor record on a tensor channel: received, and every accessor says why.
    let (good, len) = valid(DType::F32, &[4]);
    let mut bad = good.from_le();
    bad.element_count = 5;
    raw.send_bytes(TENSOR_TYPE_ID, &payload(&bad.to_le(), len))
        .unwrap();
    raw.send_bytes(TENSOR_TYPE_ID, &payload(&good, len))
        .unwrap();
    let r = rx.recv().unwrap();
    let e = TensorError::CountMismatch {
        declared: 5,
        computed: 4,
    };
    assert_eq!(r.view::<f32>().unwrap_err(), e);
    assert_eq!(r.info().unwrap_err(), e);
    assert_eq!(r.tensor().unwrap_err(), e);
    drop(r);
    // The next record is unaffected.
    assert_eq!(rx.recv().unwrap().view::<f32>().unwrap().shape(), &[4]);
}

/// A valid description, as little-endian fields, for a tensor of `shape` `dtype`s with no
/// header; and its payload (8-byte aligned storage, zero elements).
fn valid(dtype: DType, shape: &[usize]) -> (TensorDescription, usize) {
    let layout = TensorLayout::new(dtype, shape, None).unwrap();
    (layout.description(), layout.payload_len())
}

fn payload(desc: &TensorDescription, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(DESCRIPTION_SIZE)];
    p[..DESCRIPTION_SIZE].copy_from_slice(bytemuck::bytes_of(desc));
    p.truncate(len);
    p
}

/// Sends `bytes` as a tensor record through a raw channel; returns what `tensor()` says.
fn through_raw(
    tx: &mut RawProducer,
    rx: &mut RawConsumer,
    bytes: &[u8],
) -> Result<(DType, Vec<usize>), TensorError> {
    tx.send_bytes(TENSOR_TYPE_ID, bytes).unwrap();
    let r = rx.recv().unwrap();
    r.tensor().map(|t| (t.dtype(), t.shape().to_vec()))
}

/// A corruption of the `F32 [3, 4]` description of [`valid`] (112-byte payload): what is
/// changed, the change, bytes added to the payload length, and the error it must give.
type Corruption = (&'static str, fn(&mut TensorDescription), isize, TensorError);

fn corruptions() -> Vec<Corruption> {
    vec![
        (
            "magic",
            |d| d.magic = 0x1234_5678,
            0,
            TensorError::BadMagic { found: 0x1234_5678 },
        ),
        (
            "version 1 (the 112-byte description of the first release)",
            |d| d.version = 1,
            0,
            TensorError::UnsupportedVersion { found: 1 },
        ),
        (
            "dtype 0",
            |d| d.dtype = 0,
            0,
            TensorError::UnknownDType { code: 0 },
        ),
        (
            "dtype 200",
            |d| d.dtype = 200,
            0,
            TensorError::UnknownDType { code: 200 },
        ),
        (
            "rank",
            |d| d.rank = 9,
            0,
            TensorError::RankTooLarge { rank: 9 },
        ),
        (
            "reserved",
            |d| d.reserved = 1,
            0,
            TensorError::Malformed {
                what: "reserved word is not 0",
            },
        ),
        (
            "shape past rank",
            |d| d.shape[5] = 1,
            0,
            TensorError::Malformed {
                what: "shape entries past the rank are not 0",
            },
        ),
        (
            "header length without a header",
            |d| d.header_len = 5,
            0,
            TensorError::Malformed {
                what: "a description without a header has a header length that is not 0",
            },
        ),
        (
            "count overflow",
            |d| {
                d.shape[0] = u32::MAX;
                d.shape[1] = u32::MAX;
            },
            0,
            TensorError::CountOverflow,
        ),
        (
            "count mismatch",
            |d| d.element_count = 13,
            0,
            TensorError::CountMismatch {
                declared: 13,
                computed: 12,
            },
        ),
        (
            "element offset misaligned",
            |d| d.element_offset = 130,
            0,
            TensorError::BadElementOffset { offset: 130 },
        ),
        (
            "element offset inside the description",
            |d| d.element_offset = 0,
            0,
            TensorError::BadElementOffset { offset: 0 },
        ),
        (
            "header inside the description",
            |d| {
                d.header_offset = 8;
                d.header_len = 8;
            },
            0,
            TensorError::BadHeader { offset: 8, len: 8 },
        ),
        (
            "header over its tag",
            |d| {
                d.element_offset = 128;
                d.header_offset = 72;
                d.header_len = 8;
            },
            64,
            TensorError::BadHeader { offset: 72, len: 8 },
        ),
        (
            "header over the elements",
            |d| {
                d.element_offset = 128;
                d.header_offset = 112;
                d.header_len = 17;
            },
            64,
            TensorError::BadHeader {
                offset: 112,
                len: 17,
            },
        ),
        (
            "payload longer than described",
            |_| {},
            4,
            TensorError::LengthMismatch {
                len: 116,
                expected: 112,
            },
        ),
        (
            "payload shorter than described",
            |_| {},
            -4,
            TensorError::LengthMismatch {
                len: 108,
                expected: 112,
            },
        ),
        (
            "shape claims more elements",
            |d| {
                d.shape[0] = 4;
                d.element_count = 16;
            },
            0,
            TensorError::LengthMismatch {
                len: 112,
                expected: 128,
            },
        ),
    ]
}

#[test]
fn corrupt_descriptions_are_typed_errors() {
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(1 << 16).build().unwrap();
    let (good, len) = valid(DType::F32, &[3, 4]);
    assert_eq!(len, 64 + 48);
    assert_eq!(
        through_raw(&mut tx, &mut rx, &payload(&good, len)),
        Ok((DType::F32, vec![3, 4]))
    );

    for (what, corrupt, extra, expected) in corruptions() {
        let mut d = good.from_le();
        corrupt(&mut d);
        let bytes = payload(&d.to_le(), (len as isize + extra) as usize);
        assert_eq!(
            through_raw(&mut tx, &mut rx, &bytes),
            Err(expected),
            "{what}"
        );
        // The same bytes parse the same outside a channel, and the error prints.
        assert_eq!(TensorRef::parse(&bytes).unwrap_err(), expected, "{what}");
        assert!(!expected.to_string().is_empty());
    }

    for short in [0, 1, 32, 63] {
        assert_eq!(
            through_raw(&mut tx, &mut rx, &vec![0u8; short]),
            Err(TensorError::Truncated { len: short })
        );
    }
}

/// A tensor consumer remembers the last description it validated and accepts an identical
/// one by comparison: every corruption of that description (and every other payload length)
/// is still checked in full and gives its error through every accessor, right after the valid
/// one was received and remembered; a corrupt one is never remembered; and a description that
/// differs only in a byte the fast comparison covers (shape, count) is still its own tensor.
#[test]
fn a_tensor_consumer_remembers_only_descriptions_that_passed() {
    let (tx, mut rx) = Channel::tensors().capacity_bytes(1 << 16).build().unwrap();
    let mut tx = tx.into_raw();
    let (good, len) = valid(DType::F32, &[3, 4]);
    let good_bytes = payload(&good, len);
    let check_good = |rx: &mut psyne::TensorConsumer| {
        let r = rx.recv().unwrap();
        assert_eq!(r.view::<f32>().unwrap().shape(), &[3, 4]);
        assert_eq!(r.info().unwrap().shape(), &[3, 4]);
        assert_eq!(r.tensor().unwrap().shape(), &[3, 4]);
        assert_eq!(r.dtype(), Ok(DType::F32));
        assert_eq!(
            r.view::<u32>().unwrap_err(),
            TensorError::DType {
                expected: DType::U32,
                found: DType::F32
            }
        );
        assert_eq!(r.header::<Batch>().unwrap_err(), TensorError::NoHeader);
    };
    for (what, corrupt, extra, expected) in corruptions() {
        // Remembered: the valid description, twice (the second by comparison).
        for _ in 0..2 {
            tx.send_bytes(TENSOR_TYPE_ID, &good_bytes).unwrap();
            check_good(&mut rx);
        }
        let mut d = good.from_le();
        corrupt(&mut d);
        let bytes = payload(&d.to_le(), (len as isize + extra) as usize);
        // Twice: a corrupt description is not remembered either.
        for _ in 0..2 {
            tx.send_bytes(TENSOR_TYPE_ID, &bytes).unwrap();
            let r = rx.recv().unwrap();
            assert_eq!(r.view::<f32>().unwrap_err(), expected, "{what}");
            assert_eq!(r.info().unwrap_err(), expected, "{what}");
            assert_eq!(r.tensor().unwrap_err(), expected, "{what}");
            assert_eq!(r.dtype().unwrap_err(), expected, "{what}");
            assert_eq!(r.header::<Batch>().unwrap_err(), expected, "{what}");
        }
        // And the valid one after it is accepted again.
        tx.send_bytes(TENSOR_TYPE_ID, &good_bytes).unwrap();
        check_good(&mut rx);
    }
    for short in [0, 1, 63, 64, 80, 111] {
        tx.send_bytes(TENSOR_TYPE_ID, &good_bytes[..short]).unwrap();
        let r = rx.recv().unwrap();
        let e = r.info().unwrap_err();
        assert!(
            matches!(
                e,
                TensorError::Truncated { .. } | TensorError::LengthMismatch { .. }
            ),
            "{short}: {e:?}"
        );
        assert_eq!(r.view::<f32>().unwrap_err(), e);
    }
    // Another shape (a miss: checked and remembered), then the first again: each its own.
    let mut other = tx.allocate_tensor::<f32>(&[4, 3]).unwrap();
    other.as_mut_slice().fill(2.0);
    other.send();
    let r = rx.recv().unwrap();
    assert_eq!(r.view::<f32>().unwrap().shape(), &[4, 3]);
    assert_eq!(r.view::<f32>().unwrap().as_slice(), &[2.0; 12]);
    assert_eq!(r.view::<f32>().unwrap().rows::<3>().unwrap().len(), 4);
    assert_eq!(r.rows::<f32, 3>().unwrap().len(), 4);
    assert!(r.rows::<f32, 4>().is_err());
    drop(r);
    tx.send_bytes(TENSOR_TYPE_ID, &good_bytes).unwrap();
    check_good(&mut rx);
    tx.send_bytes(TENSOR_TYPE_ID, &good_bytes).unwrap();
    let r = rx.recv().unwrap();
    assert_eq!(r.view::<f32>().unwrap().rows::<4>().unwrap().len(), 3);
    assert_eq!(r.rows::<f32, 4>().unwrap().len(), 3);
    drop(r);
    // A record of another type id with the remembered description's bytes is not a tensor.
    tx.send_bytes(7, &good_bytes).unwrap();
    assert_eq!(
        rx.recv().unwrap().view::<f32>().unwrap_err(),
        TensorError::NotATensor { type_id: 7 }
    );
}

/// `payload(desc, len)` with the header tag (type id, fingerprint) at `HEADER_TAG_OFFSET`.
fn payload_with_tag(
    desc: &TensorDescription,
    type_id: u64,
    fingerprint: u64,
    len: usize,
) -> Vec<u8> {
    let mut p = payload(desc, len);
    p[HEADER_TAG_OFFSET..HEADER_TAG_OFFSET + 8].copy_from_slice(&type_id.to_le_bytes());
    p[HEADER_TAG_OFFSET + 8..HEADER_MIN_OFFSET].copy_from_slice(&fingerprint.to_le_bytes());
    p
}

#[test]
fn corrupt_headers_are_typed_errors() {
    let (mut tx, mut rx) = Channel::raw().capacity_bytes(1 << 16).build().unwrap();
    let layout = TensorLayout::new(DType::U8, &[2], Some(HeaderSpec::of::<Batch>())).unwrap();
    // The tag the layout writes is the header's type id and fingerprint, little-endian.
    let mut tag = [0u8; 16];
    tag[..8].copy_from_slice(&Batch::TYPE_ID.to_le_bytes());
    tag[8..].copy_from_slice(&Batch::FINGERPRINT.to_le_bytes());
    assert_eq!(layout.header_tag(), Some(tag));
    assert_eq!(layout.header_offset(), Some(HEADER_MIN_OFFSET));
    let good = layout.description().from_le();
    let send = |tx: &mut RawProducer, d: TensorDescription, type_id: u64, fingerprint: u64| {
        let bytes = payload_with_tag(&d.to_le(), type_id, fingerprint, layout.payload_len());
        tx.send_bytes(TENSOR_TYPE_ID, &bytes).unwrap()
    };
    let header_error = |rx: &mut RawConsumer| {
        rx.recv()
            .unwrap()
            .tensor()
            .unwrap()
            .header::<Batch>()
            .map(|_| ())
    };

    send(&mut tx, good, Batch::TYPE_ID, Batch::FINGERPRINT);
    assert_eq!(header_error(&mut rx), Ok(()));

    send(&mut tx, good, Batch::TYPE_ID, Batch::FINGERPRINT ^ 1);
    assert_eq!(
        header_error(&mut rx),
        Err(TensorError::HeaderLayout {
            expected: Batch::FINGERPRINT,
            found: Batch::FINGERPRINT ^ 1
        })
    );

    send(&mut tx, good, Other::TYPE_ID, Batch::FINGERPRINT);
    assert_eq!(
        header_error(&mut rx),
        Err(TensorError::HeaderType {
            expected: Batch::TYPE_ID,
            found: Other::TYPE_ID
        })
    );

    let mut d = good;
    d.header_len = 8;
    send(&mut tx, d, Batch::TYPE_ID, Batch::FINGERPRINT);
    assert_eq!(
        header_error(&mut rx),
        Err(TensorError::HeaderLength {
            expected: 16,
            found: 8
        })
    );

    // An 8-byte header (80..88) leaves room before the elements (128) to misplace it.
    let small = TensorLayout::new(DType::U8, &[2], Some(HeaderSpec::of::<Other>())).unwrap();
    assert_eq!(small.element_offset(), 128);
    let mut d = small.description().from_le();
    d.header_offset = 84; // inside bounds, but not 8-aligned for Other
    let bytes = payload_with_tag(
        &d.to_le(),
        Other::TYPE_ID,
        Other::FINGERPRINT,
        small.payload_len(),
    );
    tx.send_bytes(TENSOR_TYPE_ID, &bytes).unwrap();
    assert_eq!(
        rx.recv()
            .unwrap()
            .tensor()
            .unwrap()
            .header::<Other>()
            .unwrap_err(),
        TensorError::Misaligned { align: 8 }
    );
}

#[test]
fn misaligned_bytes_outside_a_ring_are_an_error() {
    let (d, len) = valid(DType::F64, &[2]);
    let mut storage = vec![0u64; len / 8 + 1];
    let bytes = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut storage)[1..len + 1];
    bytes[..DESCRIPTION_SIZE].copy_from_slice(bytemuck::bytes_of(&d));
    let t = TensorRef::parse(bytes).unwrap();
    assert_eq!(
        t.view::<f64>().unwrap_err(),
        TensorError::Misaligned { align: 8 }
    );
    assert_eq!(t.element_bytes().len(), 16);
}

#[test]
fn description_fields_are_little_endian_and_documented() {
    let (d, _) = valid(DType::I16, &[3, 5]);
    let bytes = bytemuck::bytes_of(&d);
    assert_eq!(&bytes[0..4], b"PSYT");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), FORMAT_VERSION);
    assert_eq!(bytes[6], DType::I16.code());
    assert_eq!(bytes[7], 2, "rank");
    assert_eq!(bytes.len(), 64, "one cache line");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 64);
    assert_eq!(
        u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
        0,
        "no header"
    );
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 0);
    assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 15);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 3);
    assert_eq!(u32::from_le_bytes(bytes[28..32].try_into().unwrap()), 5);
    assert!(
        bytes[32..64].iter().all(|&b| b == 0),
        "unused shape, reserved"
    );
    assert_eq!(FORMAT_VERSION, 2);
    assert_eq!(d.from_le().magic, MAGIC);
    assert_eq!(TENSOR_TYPE_ID, psyne::fnv1a64(b"psyne.Tensor"));
}

#[test]
fn stream_of_varying_shapes_across_threads_and_wraps() {
    let (mut tx, mut rx) = Channel::tensors().capacity_bytes(1 << 14).build().unwrap();
    const N: usize = 20_000;
    let producer = std::thread::spawn(move || {
        for n in 0..N {
            let shape = [n % 7, 1 + n % 5, n % 3 + 1];
            let mut t = tx.allocate_tensor::<u32>(&shape).unwrap();
            for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
                *e = (n * 1000 + i) as u32;
            }
            t.send();
        }
    });
    for n in 0..N {
        let r = rx.recv().unwrap();
        let v = r.view::<u32>().unwrap();
        assert_eq!(v.shape(), &[n % 7, 1 + n % 5, n % 3 + 1]);
        for (i, e) in v.as_slice().iter().enumerate() {
            assert_eq!(*e, (n * 1000 + i) as u32);
        }
    }
    producer.join().unwrap();
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
}

/// Runs of one shape (each tensor after the first accepted by the consumer's remembered
/// description and found by the fast header check), changing every few hundred messages, in a
/// ring small enough to wrap every few records, across threads, with `recv`, `try_recv` and
/// `recv_timeout`: every element arrives as written.
#[test]
fn runs_of_one_shape_across_threads_and_wraps() {
    let (mut tx, mut rx) = Channel::tensors().capacity_bytes(1 << 13).build().unwrap();
    const N: usize = 20_000;
    let shape = |n: usize| [1 + (n / 300) % 4, 3 + (n / 700) % 5];
    let producer = std::thread::spawn(move || {
        for n in 0..N {
            let mut t = tx.allocate_tensor::<u32>(&shape(n)).unwrap();
            for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
                *e = (n * 1000 + i) as u32;
            }
            t.send();
        }
    });
    for n in 0..N {
        let r = match n % 3 {
            0 => rx.recv().unwrap(),
            1 => rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            _ => loop {
                match rx.try_recv() {
                    Ok(r) => break r,
                    Err(RecvError::Empty) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            },
        };
        let v = r.view::<u32>().unwrap();
        assert_eq!(v.shape(), &shape(n));
        for (i, e) in v.as_slice().iter().enumerate() {
            assert_eq!(*e, (n * 1000 + i) as u32);
        }
    }
    producer.join().unwrap();
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
}

#[test]
fn shared_memory_round_trip_in_one_process() {
    let name = unique("one");
    let mut rx = Channel::tensors()
        .capacity_bytes(1 << 16)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut tx = Channel::tensors_open_producer(&name).unwrap();
    let batch = Batch {
        index: 1,
        layer: 2,
        step: 3,
    };
    for n in 0..100usize {
        let mut t = tx
            .allocate_tensor_with::<Batch, f32>(
                Batch {
                    index: n as u64,
                    ..batch
                },
                &[n % 9, 4],
            )
            .unwrap();
        for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
            *e = (n + i) as f32;
        }
        t.send();
        let r = rx.recv().unwrap();
        assert_eq!(r.header::<Batch>().unwrap().index, n as u64);
        let v = r.view::<f32>().unwrap();
        assert_eq!(v.shape(), &[n % 9, 4]);
        assert!(
            v.as_slice()
                .iter()
                .enumerate()
                .all(|(i, &e)| e == (n + i) as f32)
        );
    }
    // A raw opener sees the same records.
    drop(tx);
    let mut raw = Channel::raw_open_producer(&name).unwrap();
    raw.allocate_tensor::<u8>(&[3]).unwrap().send();
    assert_eq!(rx.recv().unwrap().view::<u8>().unwrap().shape(), &[3]);
}

const CHILD_NAME: &str = "PSYNE_TENSOR_CHILD_NAME";
const CROSS_MESSAGES: usize = 2000;

/// The peer process of `shared_memory_round_trip_across_processes`: opens the producer end
/// and sends tensors of varying shapes with headers. Does nothing when run as a plain test.
#[test]
fn tensor_child() {
    let Ok(name) = std::env::var(CHILD_NAME) else {
        return;
    };
    let mut tx = Channel::tensors_open_producer(&name).unwrap();
    for n in 0..CROSS_MESSAGES {
        let batch = Batch {
            index: n as u64,
            layer: 7,
            step: n as u32 * 2,
        };
        let shape = [1 + n % 4, n % 6, 3];
        let mut t = tx
            .allocate_tensor_with::<Batch, i16>(batch, &shape)
            .unwrap();
        for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
            *e = (n + i) as i16;
        }
        t.send();
    }
}

#[test]
fn shared_memory_round_trip_across_processes() {
    let name = unique("cross");
    let mut rx = Channel::tensors()
        .capacity_bytes(1 << 15)
        .shared(&name)
        .create_consumer()
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tensor_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_NAME, &name)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for n in 0..CROSS_MESSAGES {
        let r = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let h = *r.header::<Batch>().unwrap();
        assert_eq!((h.index, h.layer, h.step), (n as u64, 7, n as u32 * 2));
        let v = r.view::<i16>().unwrap();
        assert_eq!(v.shape(), &[1 + n % 4, n % 6, 3]);
        assert!(
            v.as_slice()
                .iter()
                .enumerate()
                .all(|(i, &e)| e == (n + i) as i16)
        );
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap_err(),
        RecvError::Disconnected
    );
}

/// Tensor records cross TCP unchanged: varying shapes, a header, every element checked.
#[test]
fn tcp_round_trip() {
    let listener = psyne::net::Listener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let mut tx = Channel::tensors()
            .capacity_bytes(1 << 16)
            .connect_producer(addr)
            .unwrap();
        for n in 0..500usize {
            let batch = Batch {
                index: n as u64,
                layer: 3,
                step: 4,
            };
            let shape = [n % 5, 1 + n % 7, 2];
            let mut t = tx
                .allocate_tensor_with::<Batch, f64>(batch, &shape)
                .unwrap();
            for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
                *e = (n * 10 + i) as f64;
            }
            t.send();
        }
    });
    let mut rx = Channel::tensors()
        .capacity_bytes(1 << 16)
        .accept_consumer(&listener)
        .unwrap();
    for n in 0..500usize {
        let r = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(r.header::<Batch>().unwrap().index, n as u64);
        let v = r.view::<f64>().unwrap();
        assert_eq!(v.shape(), &[n % 5, 1 + n % 7, 2]);
        assert!(
            v.as_slice()
                .iter()
                .enumerate()
                .all(|(i, &e)| e == (n * 10 + i) as f64)
        );
        assert_eq!(
            v.as_slice().as_ptr() as usize % 64,
            0,
            "aligned in the receiving ring"
        );
    }
    sender.join().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap_err(),
        RecvError::Disconnected
    );
}

#[cfg(feature = "ndarray")]
#[test]
fn ndarray_views_have_the_tensor_shape() {
    let (mut tx, mut rx) = Channel::tensors().build().unwrap();
    let mut t = tx.allocate_tensor::<f32>(&[2, 3, 4]).unwrap();
    {
        let mut a = t.array_mut();
        assert_eq!(a.shape(), &[2, 3, 4]);
        for ((i, j, k), e) in a
            .view_mut()
            .into_dimensionality::<ndarray::Ix3>()
            .unwrap()
            .indexed_iter_mut()
        {
            *e = (i * 100 + j * 10 + k) as f32;
        }
    }
    assert_eq!(
        t.as_slice()[23],
        123.0,
        "row-major: [1, 2, 3] is the last element"
    );
    t.send();
    let mut t = tx.allocate_tensor::<u8>(&[1, 1, 1, 1, 2, 1, 1, 3]).unwrap();
    t.as_mut_slice().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
    t.send();

    let r = rx.recv().unwrap();
    let v = r.view::<f32>().unwrap();
    let a = v.array();
    assert_eq!(a.shape(), &[2, 3, 4]);
    assert_eq!(a[[1, 2, 3]], 123.0);
    assert_eq!(a[[0, 1, 2]], 12.0);
    assert_eq!(
        a.as_slice().unwrap().as_ptr(),
        v.as_slice().as_ptr(),
        "no copy"
    );
    drop(r);
    let r = rx.recv().unwrap();
    let v = r.view::<u8>().unwrap();
    let a = v.array();
    assert_eq!(a.ndim(), 8);
    assert_eq!(a[[0, 0, 0, 0, 1, 0, 0, 2]], 6);
}

/// Strategy: a shape of rank 0..=8 with dimensions 0..=4 (at most 65536 elements).
fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..=4, 0..=MAX_RANK)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The record length is exactly description (+ header) padding and elements, and what
    /// arrives has the shape and elements that were sent.
    #[test]
    fn random_shapes_match_the_record_length(
        shape in shape_strategy(),
        with_header in any::<bool>(),
        dtype_index in 0usize..4,
    ) {
        let (mut tx, mut rx) = Channel::raw().capacity_bytes(1 << 20).build().unwrap();
        let count: usize = shape.iter().product();
        let batch = Batch { index: count as u64, layer: shape.len() as u32, step: 1 };
        macro_rules! check {
            ($t:ty) => {{
                let size = core::mem::size_of::<$t>();
                let mut t = if with_header {
                    tx.allocate_tensor_with::<Batch, $t>(batch, &shape).unwrap()
                } else {
                    tx.allocate_tensor::<$t>(&shape).unwrap()
                };
                for (i, e) in t.as_mut_slice().iter_mut().enumerate() {
                    *e = i as $t;
                }
                t.send();
                let r = rx.recv().unwrap();
                // Elements at 64 without a header; the 16-byte header (80..96, after the
                // description and its tag) moves them to 128.
                let start = if with_header { 128 } else { 64 };
                prop_assert_eq!(r.bytes().len(), start + count * size);
                prop_assert_eq!(r.header().len as usize, start + count * size);
                let layout = TensorLayout::new(
                    <$t as TensorElement>::DTYPE,
                    &shape,
                    with_header.then(HeaderSpec::of::<Batch>),
                ).unwrap();
                prop_assert_eq!(layout.payload_len(), r.bytes().len());
                let t = r.tensor().unwrap();
                prop_assert_eq!(t.shape(), &shape[..]);
                prop_assert_eq!(t.info().byte_len(), count * size);
                let v = t.view::<$t>().unwrap();
                prop_assert_eq!(v.len(), count);
                prop_assert!(v.as_slice().iter().enumerate().all(|(i, &e)| e == i as $t));
                if with_header {
                    prop_assert_eq!(*t.header::<Batch>().unwrap(), batch);
                } else {
                    prop_assert_eq!(t.header::<Batch>().unwrap_err(), TensorError::NoHeader);
                }
            }};
        }
        match dtype_index {
            0 => check!(u8),
            1 => check!(i16),
            2 => check!(f32),
            _ => check!(u64),
        }
    }

    /// Any description bytes and any payload length (biased towards nearly valid ones):
    /// `parse` never panics, and what it accepts is consistent with the payload's length.
    #[test]
    fn arbitrary_descriptions_never_panic(
        dtype in prop_oneof![4 => 1u8..=12, 1 => any::<u8>()],
        rank in prop_oneof![4 => 0u8..=8, 1 => any::<u8>()],
        element_offset in prop_oneof![4 => (1u32..8).prop_map(|k| k * 64), 1 => 0u32..512],
        header in prop_oneof![2 => Just((0u32, 0u32)), 1 => (64u32..200, 0u32..64)],
        dims in prop::collection::vec(prop_oneof![20 => 0u32..6, 1 => any::<u32>()], MAX_RANK),
        count in prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)],
        len in prop_oneof![4 => Just(None), 1 => (0usize..2048).prop_map(Some)],
    ) {
        let mut shape = [0u32; MAX_RANK];
        shape.copy_from_slice(&dims);
        for d in shape.iter_mut().skip(rank as usize) {
            *d = 0;
        }
        let product = shape
            .iter()
            .take(rank as usize)
            .try_fold(1u32, |a, &d| a.checked_mul(d));
        let d = TensorDescription {
            magic: MAGIC,
            version: FORMAT_VERSION,
            dtype,
            rank,
            element_offset,
            header_offset: header.0,
            header_len: header.1,
            // Mostly the true product, so that the later checks are reached.
            element_count: count.or(product).unwrap_or(0),
            shape,
            reserved: 0,
        }
        .to_le();
        // Mostly the length the description implies, when it is small.
        let implied = product
            .zip(DType::from_code(dtype))
            .and_then(|(p, t)| u64::from(p).checked_mul(t.size() as u64))
            .and_then(|b| b.checked_add(element_offset as u64))
            .filter(|&l| l <= 4096)
            .map(|l| l as usize);
        let len = len.or(implied).unwrap_or(100);
        let mut storage = vec![0u64; len.div_ceil(8).max(DESCRIPTION_SIZE / 8)];
        let bytes = bytemuck::cast_slice_mut::<u64, u8>(&mut storage);
        bytes[..DESCRIPTION_SIZE].copy_from_slice(bytemuck::bytes_of(&d));
        let bytes = &bytes[..len];
        match TensorRef::parse(bytes) {
            Ok(t) => {
                let info = t.info();
                prop_assert!(info.rank() <= MAX_RANK);
                prop_assert_eq!(info.len(), info.shape().iter().product::<usize>());
                prop_assert_eq!(info.element_offset() + info.byte_len(), len);
                prop_assert_eq!(info.element_offset() % 64, 0);
                prop_assert_eq!(t.element_bytes().len(), info.byte_len());
                let v = t.view::<u8>();
                prop_assert_eq!(v.is_ok(), info.dtype() == DType::U8);
                if let Ok(v) = v {
                    prop_assert_eq!(v.len(), info.len());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Flipping any one byte of a valid description gives an error or a description that is
    /// still consistent with the record length; never a panic.
    #[test]
    fn one_corrupt_byte_is_caught_or_harmless(
        shape in shape_strategy(),
        at in 0usize..DESCRIPTION_SIZE,
        xor in 1u8..=255,
    ) {
        let (mut tx, mut rx) = Channel::raw().capacity_bytes(1 << 20).build().unwrap();
        let layout = TensorLayout::new(DType::F32, &shape, None).unwrap();
        let mut bytes = payload(&layout.description(), layout.payload_len());
        bytes[at] ^= xor;
        tx.send_bytes(TENSOR_TYPE_ID, &bytes).unwrap();
        let r = rx.recv().unwrap();
        match r.tensor() {
            Ok(t) => {
                prop_assert_eq!(t.info().element_offset() + t.info().byte_len(), bytes.len());
                prop_assert_eq!(t.info().len(), t.shape().iter().product::<usize>());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if at < 4 {
            prop_assert!(matches!(r.tensor(), Err(TensorError::BadMagic { .. })), "magic byte");
        }
    }
}
