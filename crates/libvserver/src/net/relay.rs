//! Port forwards on the host's IPv6 loopback: the kernel never routes a packet from ::1 off the
//! loopback device, so destination NAT cannot forward `[::1]:PORT` to a guest (127.0.0.1 works
//! through nftables and `route_localnet`). A small relay process per guest listens on
//! `[::1]:HOST_PORT` and copies bytes (TCP) or datagrams (UDP) to and from the guest.
//!
//! The relay is forked by the guest's monitor, binds its sockets, then drops to `nobody` (no
//! capabilities left) and dies with the monitor (`PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One forward the relay serves: `[::1]:host_port` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayForward {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Port on ::1.
    pub host_port: u16,
    /// The guest's address and port.
    pub target: SocketAddr,
}

enum Bound {
    Tcp(TcpListener, SocketAddr),
    Udp(UdpSocket, SocketAddr),
}

/// Bind every forward on ::1; those that cannot be bound (port in use, IPv6 off) are reported
/// on stderr (the monitor's log) and skipped.
fn bind_all(forwards: &[RelayForward]) -> Vec<Bound> {
    let mut out = Vec::new();
    for f in forwards {
        let at = SocketAddr::from((Ipv6Addr::LOCALHOST, f.host_port));
        let res = if f.protocol == "udp" {
            UdpSocket::bind(at).map(|s| Bound::Udp(s, f.target))
        } else {
            TcpListener::bind(at).map(|s| Bound::Tcp(s, f.target))
        };
        match res {
            Ok(b) => out.push(b),
            Err(e) => eprintln!("relay: {}/{at}: {e}", f.protocol),
        }
    }
    out
}

fn pipe_tcp(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn serve_tcp(l: TcpListener, target: SocketAddr) {
    for client in l.incoming().flatten() {
        std::thread::spawn(move || {
            let Ok(guest) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                return;
            };
            let (Ok(c2), Ok(g2)) = (client.try_clone(), guest.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || pipe_tcp(client, guest));
            pipe_tcp(g2, c2);
            let _ = up.join();
        });
    }
}

/// Each client gets its own socket towards the guest, so replies find their way back.
fn serve_udp(s: UdpSocket, target: SocketAddr) {
    let s = Arc::new(s);
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = s.recv_from(&mut buf) else {
            continue;
        };
        let existing = peers.lock().ok().and_then(|m| m.get(&client).cloned());
        let up = match existing {
            Some(u) => u,
            None => {
                let local: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let Ok(u) = UdpSocket::bind(local) else {
                    continue;
                };
                if u.connect(target).is_err() {
                    continue;
                }
                let u = Arc::new(u);
                if let Ok(mut m) = peers.lock() {
                    m.insert(client, u.clone());
                }
                let (back, down, peers) = (s.clone(), u.clone(), peers.clone());
                std::thread::spawn(move || {
                    let _ = down.set_read_timeout(Some(Duration::from_secs(120)));
                    let mut b = vec![0u8; 65536];
                    while let Ok(n) = down.recv(&mut b) {
                        let _ = back.send_to(&b[..n], client);
                    }
                    if let Ok(mut m) = peers.lock() {
                        m.remove(&client);
                    }
                });
                u
            }
        };
        let _ = up.send(&buf[..n]);
    }
}

/// Run the relay for `forwards` in the calling (freshly forked) process: bind, drop privileges,
/// serve until the parent dies. Never returns.
pub fn run(forwards: &[RelayForward]) -> ! {
    let parent = nix::unistd::getppid();
    let _ = nix::sys::prctl::set_name(c"vs-relay");
    let bound = bind_all(forwards);
    // nobody: a relay needs no privilege once its sockets are bound.
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    if nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(nogroup, nogroup, nogroup))
        .and_then(|()| nix::unistd::setresuid(nobody, nobody, nobody))
        .is_err()
    {
        eprintln!("relay: cannot drop to nobody; not serving");
        std::process::exit(1);
    }
    // After the credential change, which clears it (prctl(2)): die with the monitor.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        std::process::exit(0);
    }
    let mut threads = Vec::new();
    for b in bound {
        threads.push(std::thread::spawn(move || match b {
            Bound::Tcp(l, t) => serve_tcp(l, t),
            Bound::Udp(s, t) => serve_udp(s, t),
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    loop {
        nix::unistd::pause();
    }
}
