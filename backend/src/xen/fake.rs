//! An in-memory xenstore for tests of the device logic: a tree of nodes
//! with permissions, watches that fire as xenstored's do (once when set,
//! then on every change at or below the path), domain introduction, and
//! injectable faults (a conflicting commit, a refused path).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use xen_proto::xs::ErrorName;

use super::store::{Perms, Store, StoreError, Tx};

/// One node.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub value: Vec<u8>,
    pub perms: Option<Perms>,
}

#[derive(Default)]
pub struct FakeStore {
    pub nodes: BTreeMap<String, Node>,
    pub watches: Vec<(String, String)>,
    /// Fired watches, `(path, token)`, for the test to deliver.
    pub events: VecDeque<(String, String)>,
    pub introduced: BTreeSet<u16>,
    /// Commits to answer with EAGAIN.
    pub conflicts: usize,
    /// Commits seen, conflicting or not.
    pub commits: usize,
    /// Writes at or below this path fail with EACCES.
    pub read_only: Option<String>,
    next_tx: Tx,
}

fn parent(path: &str) -> Option<&str> {
    path.rfind('/')
        .map(|i| if i == 0 { "/" } else { &path[..i] })
}

fn under(path: &str, root: &str) -> bool {
    path == root || path.starts_with(&format!("{root}/"))
}

impl FakeStore {
    pub fn new() -> FakeStore {
        let mut s = FakeStore::default();
        s.put("/local/domain/0/name", "Domain-0");
        s.put("/local/domain/0/domid", "0");
        s
    }

    /// Sets a node as the toolstack or a guest would (fires watches).
    pub fn put(&mut self, path: &str, value: &str) {
        self.set(path, value.as_bytes().to_vec());
    }

    pub fn get(&self, path: &str) -> Option<String> {
        self.nodes
            .get(path)
            .map(|n| String::from_utf8_lossy(&n.value).into_owned())
    }

    pub fn perms(&self, path: &str) -> Option<Perms> {
        self.nodes.get(path).and_then(|n| n.perms.clone())
    }

    pub fn exists(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// A domain as the toolstack creates it, introduced, and
    /// `@introduceDomain` fired.
    pub fn create_domain(&mut self, domid: u16, name: &str) {
        self.put(&format!("/local/domain/{domid}/name"), name);
        self.put(&format!("/local/domain/{domid}/device"), "");
        self.introduced.insert(domid);
        self.fire_special("@introduceDomain");
    }

    /// The toolstack destroys a domain: its home goes, xenstored forgets
    /// it, `@releaseDomain` fires.
    pub fn destroy_domain(&mut self, domid: u16) {
        let _ = self.remove(&format!("/local/domain/{domid}"));
        self.introduced.remove(&domid);
        self.fire_special("@releaseDomain");
    }

    /// Fires `@introduceDomain` or `@releaseDomain`.
    pub fn fire_special(&mut self, name: &str) {
        for (p, t) in &self.watches {
            if p == name {
                self.events.push_back((name.to_owned(), t.clone()));
            }
        }
    }

    fn fire(&mut self, path: &str) {
        for (p, t) in &self.watches {
            if !p.starts_with('@') && under(path, p) {
                self.events.push_back((path.to_owned(), t.clone()));
            }
        }
    }

    fn set(&mut self, path: &str, value: Vec<u8>) {
        let mut p = parent(path);
        while let Some(dir) = p {
            if dir == "/" {
                break;
            }
            let inherited = self
                .nodes
                .get(parent(dir).unwrap_or("/"))
                .and_then(|n| n.perms.clone());
            self.nodes.entry(dir.to_owned()).or_insert(Node {
                value: Vec::new(),
                perms: inherited,
            });
            p = parent(dir);
        }
        let inherited = parent(path)
            .and_then(|d| self.nodes.get(d))
            .and_then(|n| n.perms.clone());
        let node = self.nodes.entry(path.to_owned()).or_insert(Node {
            value: Vec::new(),
            perms: inherited,
        });
        node.value = value;
        self.fire(path);
    }

    fn remove(&mut self, path: &str) -> bool {
        let doomed: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| under(k, path))
            .cloned()
            .collect();
        for k in &doomed {
            self.nodes.remove(k);
        }
        if !doomed.is_empty() {
            // xenstored fires the watches of every removed node too.
            for (p, t) in &self.watches {
                if !p.starts_with('@') && (under(path, p) || under(p, path)) {
                    self.events.push_back((p.clone(), t.clone()));
                }
            }
        }
        !doomed.is_empty()
    }

    fn check_writable(&self, path: &str) -> Result<(), StoreError> {
        match &self.read_only {
            Some(root) if under(path, root) => Err(StoreError::Remote(ErrorName::Acces)),
            _ => Ok(()),
        }
    }
}

impl Store for FakeStore {
    fn read(&mut self, _tx: Tx, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.nodes.get(path).map(|n| n.value.clone()))
    }

    fn write(&mut self, _tx: Tx, path: &str, value: &[u8]) -> Result<(), StoreError> {
        self.check_writable(path)?;
        self.set(path, value.to_vec());
        Ok(())
    }

    fn mkdir(&mut self, _tx: Tx, path: &str) -> Result<(), StoreError> {
        self.check_writable(path)?;
        if !self.nodes.contains_key(path) {
            self.set(path, Vec::new());
        }
        Ok(())
    }

    fn rm(&mut self, _tx: Tx, path: &str) -> Result<(), StoreError> {
        self.remove(path);
        Ok(())
    }

    fn directory(&mut self, _tx: Tx, path: &str) -> Result<Option<Vec<String>>, StoreError> {
        if !self.nodes.contains_key(path) {
            return Ok(None);
        }
        let prefix = format!("{path}/");
        Ok(Some(
            self.nodes
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|rest| !rest.contains('/'))
                .map(str::to_owned)
                .collect(),
        ))
    }

    fn set_perms(&mut self, _tx: Tx, path: &str, perms: &Perms) -> Result<(), StoreError> {
        self.check_writable(path)?;
        let node = self
            .nodes
            .get_mut(path)
            .ok_or(StoreError::Remote(ErrorName::Noent))?;
        node.perms = Some(perms.clone());
        Ok(())
    }

    fn watch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        self.watches.push((path.to_owned(), token.to_owned()));
        // xenstored fires every new watch once.
        self.events.push_back((path.to_owned(), token.to_owned()));
        Ok(())
    }

    fn unwatch(&mut self, path: &str, token: &str) -> Result<(), StoreError> {
        let before = self.watches.len();
        self.watches.retain(|(p, t)| !(p == path && t == token));
        if self.watches.len() == before {
            return Err(StoreError::Remote(ErrorName::Noent));
        }
        Ok(())
    }

    fn transaction_start(&mut self) -> Result<Tx, StoreError> {
        self.next_tx += 1;
        Ok(self.next_tx)
    }

    fn transaction_end(&mut self, _tx: Tx, commit: bool) -> Result<bool, StoreError> {
        if !commit {
            return Ok(true);
        }
        self.commits += 1;
        if self.conflicts > 0 {
            self.conflicts -= 1;
            return Ok(false);
        }
        Ok(true)
    }

    fn is_domain_introduced(&mut self, domid: u16) -> Result<bool, StoreError> {
        Ok(self.introduced.contains(&domid))
    }
}

/// A xenstored on a UNIX socket, serving a [`FakeStore`] with the real wire
/// protocol, one connection at a time. Watch events the store fires are
/// sent after each reply, and after each [`FakeXenstored::with`].
pub struct FakeXenstored {
    shared: std::sync::Arc<std::sync::Mutex<Served>>,
}

struct Served {
    store: FakeStore,
    conn: Option<std::os::unix::net::UnixStream>,
}

impl Served {
    fn flush_events(&mut self) {
        use std::io::Write;
        let Some(conn) = &mut self.conn else {
            self.store.events.clear();
            return;
        };
        while let Some((path, token)) = self.store.events.pop_front() {
            let m = xen_proto::xs::Payload::new()
                .arg(path.as_bytes())
                .arg(token.as_bytes())
                .message(xen_proto::xs::MsgType::WatchEvent, 0, 0)
                .expect("small event");
            let _ = conn.write_all(&m);
        }
    }

    /// Answers one request.
    fn answer(&mut self, m: &xen_proto::xs::Message) -> Vec<u8> {
        use xen_proto::xs::{MsgType, Payload};
        let args: Vec<String> = m
            .payload
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let tx = m.header.tx_id;
        let s = &mut self.store;
        let result: Result<Vec<u8>, StoreError> = match m.header.ty {
            MsgType::Read => s
                .read(tx, &arg(0))
                .and_then(|v| v.ok_or(StoreError::Remote(ErrorName::Noent))),
            MsgType::Write => {
                let value = m.payload[arg(0).len() + 1..].to_vec();
                s.write(tx, &arg(0), &value).map(|()| b"OK\0".to_vec())
            }
            MsgType::Mkdir => s.mkdir(tx, &arg(0)).map(|()| b"OK\0".to_vec()),
            MsgType::Rm => s.rm(tx, &arg(0)).map(|()| b"OK\0".to_vec()),
            MsgType::Directory => s.directory(tx, &arg(0)).and_then(|d| {
                let d = d.ok_or(StoreError::Remote(ErrorName::Noent))?;
                Ok(d.iter().flat_map(|e| e.bytes().chain([0])).collect())
            }),
            MsgType::SetPerms => {
                let mut perms = args[1..].iter().filter(|a| !a.is_empty());
                let owner = perms.next().and_then(|p| p[1..].parse().ok()).unwrap_or(0);
                let readers = perms.filter_map(|p| p[1..].parse().ok()).collect();
                s.set_perms(tx, &arg(0), &Perms { owner, readers })
                    .map(|()| b"OK\0".to_vec())
            }
            MsgType::Watch => s.watch(&arg(0), &arg(1)).map(|()| b"OK\0".to_vec()),
            MsgType::Unwatch => s.unwatch(&arg(0), &arg(1)).map(|()| b"OK\0".to_vec()),
            MsgType::TransactionStart => {
                s.transaction_start().map(|t| format!("{t}\0").into_bytes())
            }
            MsgType::TransactionEnd => s.transaction_end(tx, arg(0) == "T").and_then(|ok| {
                if ok {
                    Ok(b"OK\0".to_vec())
                } else {
                    Err(StoreError::Remote(ErrorName::Again))
                }
            }),
            MsgType::IsDomainIntroduced => {
                let domid = arg(0).parse().unwrap_or(u16::MAX);
                s.is_domain_introduced(domid)
                    .map(|b| if b { b"T\0".to_vec() } else { b"F\0".to_vec() })
            }
            _ => Err(StoreError::Remote(ErrorName::Inval)),
        };
        let (ty, payload) = match result {
            Ok(p) => (m.header.ty, p),
            Err(StoreError::Remote(e)) => {
                (MsgType::Error, format!("{}\0", errno_name(e)).into_bytes())
            }
            Err(StoreError::Connection(_)) => (MsgType::Error, b"EIO\0".to_vec()),
        };
        Payload::new()
            .raw(&payload)
            .message(ty, m.header.req_id, tx)
            .expect("small reply")
    }
}

fn errno_name(e: ErrorName) -> &'static str {
    match e {
        ErrorName::Noent => "ENOENT",
        ErrorName::Acces => "EACCES",
        ErrorName::Again => "EAGAIN",
        ErrorName::Inval => "EINVAL",
        _ => "EIO",
    }
}

impl FakeXenstored {
    /// Serves `store` on a new socket at `path`.
    pub fn start(path: &std::path::Path, store: FakeStore) -> FakeXenstored {
        use std::io::{Read, Write};
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Served { store, conn: None }));
        let served = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let Ok(writer) = conn.try_clone() else { return };
                served.lock().unwrap().conn = Some(writer);
                let mut reader = xen_proto::xs::MessageReader::new();
                let mut buf = [0u8; 8192];
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    reader.push(&buf[..n]);
                    while let Ok(Some(m)) = reader.next_message() {
                        let mut s = served.lock().unwrap();
                        let reply = s.answer(&m);
                        if let Some(c) = &mut s.conn {
                            let _ = c.write_all(&reply);
                        }
                        s.flush_events();
                    }
                }
                let mut s = served.lock().unwrap();
                s.conn = None;
                s.store.watches.clear();
            }
        });
        FakeXenstored { shared }
    }

    /// Changes the store as the toolstack or a guest would; the watches
    /// that fire are sent.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeStore) -> R) -> R {
        let mut s = self.shared.lock().unwrap();
        let r = f(&mut s.store);
        s.flush_events();
        r
    }

    /// Drops the current connection, as a restarted xenstored would.
    pub fn disconnect(&self) {
        let mut s = self.shared.lock().unwrap();
        if let Some(c) = s.conn.take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}
