//! Regression tests of the shared-memory objects behind shared slabs, as another process or user
//! sees them: a full `/dev/shm`, a FIFO or a squatter at a channel's name, a replaced name, and
//! the options an opener may pass. Several need root (to own objects as another uid, to mount a
//! tiny tmpfs in a private mount namespace); without it they print why they skipped.

use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use psyne::slab::{Slab, SlabError};

/// Set in the child process that runs inside the private mount namespace.
const CHILD_ENV: &str = "PSYNE_SHM_OS_CHILD";

fn unique_name(tag: &str) -> String {
    format!("psyne-shm-os-{}-{tag}", std::process::id())
}

fn cname(name: &str) -> CString {
    CString::new(format!("/{name}")).unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Removes `/dev/shm/<name>` on drop, whatever it is.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
    }
}

/// Creates `/dev/shm/<name>` as a sized shm object with `mode`, owned by `uid` when given.
fn make_object(name: &str, mode: libc::mode_t, uid: Option<libc::uid_t>) -> RemoveOnDrop {
    let c = cname(name);
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
        )
    };
    assert!(fd >= 0, "shm_open: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is the descriptor just opened; each call's result is checked.
    unsafe {
        assert_eq!(libc::ftruncate(fd, 4096), 0);
        assert_eq!(libc::fchmod(fd, mode), 0);
        if let Some(uid) = uid {
            assert_eq!(libc::fchown(fd, uid, uid), 0);
        }
        libc::close(fd);
    }
    RemoveOnDrop(name.to_owned())
}

/// Runs `f` on another thread and fails the test if it does not return within `limit` (the
/// thread is left behind: a blocked `open` cannot be cancelled).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the call blocked (still running after the limit)")
}

/// Issue 10: with `populate(false)`, a shared slab on a full `/dev/shm` used to be created
/// without complaint and then killed its process with SIGBUS at the first write. Its blocks are
/// now reserved at creation, so a full tmpfs is a typed error there, and the name is removed.
///
/// Runs in a private mount namespace (`unshare -m`) over which a 1 MiB tmpfs hides `/dev/shm`;
/// the test re-executes its own binary there.
#[test]
fn full_dev_shm_is_no_space_at_create() {
    if std::env::var_os(CHILD_ENV).is_some() {
        full_dev_shm_child();
        return;
    }
    if !is_root() {
        println!("skipped: mounting a tmpfs in a private mount namespace needs root");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /dev/shm && exec \"$0\" --exact \
             full_dev_shm_is_no_space_at_create --nocapture --test-threads=1",
        ])
        .arg(&exe)
        .env(CHILD_ENV, "1")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            println!("skipped: cannot run unshare: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("child: checked") {
        let forbidden = ["Operation not permitted", "Permission denied", "not found"];
        if (stderr.contains("unshare:") || stderr.contains("mount:"))
            && forbidden.iter().any(|f| stderr.contains(f))
        {
            println!(
                "skipped: unshare/mount is forbidden here: {}",
                stderr.trim()
            );
            return;
        }
    }
    assert!(
        out.status.success() && stdout.contains("child: checked"),
        "child failed ({:?}, signal {:?}):\n{stdout}\n{stderr}",
        out.status.code(),
        out.status.signal()
    );
}

/// The part of [`full_dev_shm_is_no_space_at_create`] inside the namespace.
fn full_dev_shm_child() {
    let stat = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        stat.lines()
            .any(|l| l.contains(" /dev/shm ") && l.contains("size=1024k")),
        "the tiny tmpfs is not mounted over /dev/shm"
    );
    // A slab that fits is fine.
    let small = unique_name("fits");
    drop(Slab::create_shared(&small, Slab::builder(256 << 10).populate(false)).unwrap());
    // One that does not is an error at creation, not a SIGBUS at its first write.
    let name = unique_name("full");
    let size = 4 << 20;
    let result = Slab::create_shared(&name, Slab::builder(size).populate(false));
    let err = match result {
        Ok(slab) => {
            println!("create succeeded on a full /dev/shm; writing every page now");
            for off in (0..slab.len()).step_by(4096) {
                // SAFETY: in bounds of the mapping; this is the only user. Dies with SIGBUS
                // once the tmpfs is full.
                unsafe { slab.as_ptr().as_ptr().add(off).write_volatile(1) };
            }
            panic!("create succeeded on a full /dev/shm");
        }
        Err(e) => e,
    };
    assert_eq!(
        err,
        SlabError::NoSpace {
            name: name.clone(),
            size
        }
    );
    assert!(err.to_string().contains("/dev/shm"), "{err}");
    // The failed create removed its name, and the space is free again.
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
    drop(Slab::create_shared(&small, Slab::builder(256 << 10)).unwrap());
    println!("child: checked");
}

/// Issue 11: a FIFO at the name used to be opened like an object (read-only without
/// `O_NONBLOCK`, it blocks until a writer comes); it is now refused as not a regular file.
#[test]
fn fifo_at_the_name_is_not_a_regular_file() {
    let name = unique_name("fifo");
    let path = CString::new(format!("/dev/shm/{name}")).unwrap();
    // SAFETY: `path` is NUL-terminated.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let _cleanup = RemoveOnDrop(name.clone());
    let n = name.clone();
    let err = within(Duration::from_secs(5), move || Slab::open_shared(&n)).unwrap_err();
    assert_eq!(err, SlabError::NotRegularFile { name: name.clone() });
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // A symbolic link at the name is refused too, without following it.
    let link = unique_name("link");
    std::os::unix::fs::symlink(format!("/dev/shm/{name}"), format!("/dev/shm/{link}")).unwrap();
    let _cleanup_link = RemoveOnDrop(link.clone());
    assert_eq!(
        Slab::open_shared(&link).unwrap_err(),
        SlabError::NotRegularFile { name: link }
    );
}

/// Issue 11: an object owned by another uid at a well-known name is refused, so another user
/// cannot impersonate the peer.
#[test]
fn foreign_owner_is_refused_on_open() {
    if !is_root() {
        println!("skipped: giving an object to another uid needs root");
        return;
    }
    let name = unique_name("foreign");
    let _obj = make_object(&name, 0o600, Some(65534));
    let err = Slab::open_shared(&name).unwrap_err();
    assert_eq!(
        err,
        SlabError::ForeignOwner {
            name: name.clone(),
            owner_uid: 65534,
            our_uid: 0
        }
    );
    assert!(err.to_string().contains("65534"), "{err}");
}

/// Issue 11: an object with group or other permission bits is refused (the creator makes 0600).
#[test]
fn group_or_other_mode_is_refused_on_open() {
    for mode in [0o666, 0o640, 0o602] {
        let name = unique_name(&format!("mode-{mode:o}"));
        let _obj = make_object(&name, mode, None);
        let err = Slab::open_shared(&name).unwrap_err();
        assert_eq!(
            err,
            SlabError::InsecureMode {
                name: name.clone(),
                mode
            }
        );
        assert!(err.to_string().contains(&format!("{mode:o}")), "{err}");
    }
    // 0600 and 0400 are fine.
    for mode in [0o600, 0o400] {
        let name = unique_name(&format!("mode-{mode:o}"));
        let _obj = make_object(&name, mode, None);
        assert!(Slab::open_shared(&name).is_ok(), "mode {mode:o}");
    }
}

/// Issue 11: dropping a creator used to unlink whatever held its name by then, even a new slab
/// that replaced it. It now removes the name only while it still refers to its own object.
#[test]
fn creator_drop_keeps_a_replacement_under_its_name() {
    let name = unique_name("replaced");
    let a = Slab::create_shared(&name, Slab::builder(4096)).unwrap();
    // Someone removes A's name and creates B under it.
    let c = cname(&name);
    // SAFETY: `c` is NUL-terminated.
    assert_eq!(unsafe { libc::shm_unlink(c.as_ptr()) }, 0);
    let b = Slab::create_shared(&name, Slab::builder(8192)).unwrap();
    drop(a);
    let opened = Slab::open_shared(&name).expect("B's name must survive A's drop");
    assert_eq!(opened.len(), b.len());
    drop(opened);
    // B still removes its own name.
    drop(b);
    assert_eq!(
        Slab::open_shared(&name).unwrap_err(),
        SlabError::NotFound { name }
    );
}

/// Set in the child process of [`peer_truncation_after_mapping_raises_sigbus_as_documented`].
const SIGBUS_CHILD_ENV: &str = "PSYNE_SHM_OS_SIGBUS_CHILD";

/// Pins what the module docs say cannot be prevented: a same-user peer that shrinks the object
/// after both sides mapped it makes the honest process's next access past the new end a
/// `SIGBUS`. If this test ever fails because the process survives, the docs are out of date.
#[test]
fn peer_truncation_after_mapping_raises_sigbus_as_documented() {
    if std::env::var_os(SIGBUS_CHILD_ENV).is_some() {
        let name = unique_name("truncated");
        let slab = Slab::create_shared(&name, Slab::builder(4 * 4096)).unwrap();
        let c = cname(&name);
        // SAFETY: `c` is NUL-terminated; the peer's descriptor is checked and closed; the write
        // below is in bounds of the mapping and is expected to raise SIGBUS.
        unsafe {
            let peer = libc::shm_open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0);
            assert!(peer >= 0);
            assert_eq!(libc::ftruncate(peer, 0), 0);
            libc::close(peer);
            println!("child: truncated; touching the mapping");
            slab.as_ptr().as_ptr().add(3 * 4096).write_volatile(1);
        }
        println!("child: survived");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "peer_truncation_after_mapping_raises_sigbus_as_documented",
            "--nocapture",
        ])
        .env(SIGBUS_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The killed child never dropped its slab: remove the name it left.
    let _cleanup = RemoveOnDrop(format!("psyne-shm-os-{}-truncated", child.id()));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("child: truncated"), "{stdout}");
    assert!(!stdout.contains("child: survived"), "{stdout}");
    assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{stdout}");
}
