//! Process-wide proxy-wasm shared data (key/value with CAS, namespaced by `vm_id`) and
//! shared queues (namespaced by `vm_id`, readiness pushed to registering VMs).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use super::abi::status::Status;
use super::runtime::lock;

/// Most items a queue holds; older items are dropped beyond it.
const MAX_QUEUE_ITEMS: usize = 65_536;

/// Shared key/value data, keyed by vm_id then key.
#[derive(Default)]
pub(crate) struct SharedData {
    data: Mutex<HashMap<String, Namespace>>,
    cas: AtomicU32,
}

/// One vm_id's keys: value and CAS.
type Namespace = HashMap<String, (Bytes, u32)>;

/// Shared queues.
#[derive(Default)]
pub(crate) struct SharedQueues {
    inner: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    by_name: HashMap<(String, String), u32>,
    queues: HashMap<u32, Queue>,
    next: u32,
}

struct Queue {
    items: VecDeque<Bytes>,
    subscribers: Vec<UnboundedSender<u32>>,
}

// === impl SharedData ===

impl SharedData {
    /// Value and CAS of `key`.
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Bytes, u32)> {
        lock(&self.data).get(vm_id)?.get(key).cloned()
    }

    /// Stores `value`; a non-zero `cas` must match the stored one (new keys ignore it).
    pub fn set(&self, vm_id: &str, key: &str, value: Bytes, cas: u32) -> Status {
        let mut data = lock(&self.data);
        let ns = data.entry(vm_id.to_owned()).or_default();
        if let Some((_, stored)) = ns.get(key) {
            if cas != 0 && cas != *stored {
                return Status::CasMismatch;
            }
        }
        let next = loop {
            let n = self.cas.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if n != 0 {
                break n;
            }
        };
        ns.insert(key.to_owned(), (value, next));
        Status::Ok
    }
}

// === impl SharedQueues ===

impl SharedQueues {
    /// Creates or opens `(vm_id, name)`; `notify` is woken with the id on each enqueue.
    pub fn register(&self, vm_id: &str, name: &str, notify: Option<UnboundedSender<u32>>) -> u32 {
        let mut q = lock(&self.inner);
        let key = (vm_id.to_owned(), name.to_owned());
        let id = match q.by_name.get(&key) {
            Some(id) => *id,
            None => {
                q.next += 1;
                let id = q.next;
                q.by_name.insert(key, id);
                q.queues.insert(id, Queue { items: VecDeque::new(), subscribers: Vec::new() });
                id
            }
        };
        if let (Some(tx), Some(queue)) = (notify, q.queues.get_mut(&id)) {
            if !queue.subscribers.iter().any(|s| s.same_channel(&tx)) {
                queue.subscribers.push(tx);
            }
        }
        id
    }

    /// The id of an existing queue.
    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        lock(&self.inner).by_name.get(&(vm_id.to_owned(), name.to_owned())).copied()
    }

    /// Appends `value` and wakes the subscribers; false for an unknown id.
    pub fn enqueue(&self, id: u32, value: Bytes) -> bool {
        let mut q = lock(&self.inner);
        let Some(queue) = q.queues.get_mut(&id) else {
            return false;
        };
        if queue.items.len() >= MAX_QUEUE_ITEMS {
            queue.items.pop_front();
        }
        queue.items.push_back(value);
        queue.subscribers.retain(|s| s.send(id).is_ok());
        true
    }

    /// Pops the oldest item: `Err(NotFound)` for an unknown id, `Ok(None)` when empty.
    pub fn dequeue(&self, id: u32) -> Result<Option<Bytes>, Status> {
        let mut q = lock(&self.inner);
        match q.queues.get_mut(&id) {
            Some(queue) => Ok(queue.items.pop_front()),
            None => Err(Status::NotFound),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics() {
        let d = SharedData::default();
        assert_eq!(d.set("vm", "k", Bytes::from_static(b"1"), 77), Status::Ok);
        let (_, cas) = d.get("vm", "k").unwrap();
        assert_eq!(d.set("vm", "k", Bytes::from_static(b"2"), cas + 1), Status::CasMismatch);
        assert_eq!(d.set("vm", "k", Bytes::from_static(b"2"), cas), Status::Ok);
        assert_eq!(d.get("vm", "k").unwrap().0, "2");
        assert!(d.get("other", "k").is_none());
    }

    #[test]
    fn queues_by_vm_id() {
        let q = SharedQueues::default();
        let a = q.register("vm", "q", None);
        assert_eq!(q.register("vm", "q", None), a);
        assert_ne!(q.register("vm2", "q", None), a);
        assert_eq!(q.resolve("vm", "q"), Some(a));
        assert!(q.enqueue(a, Bytes::from_static(b"x")));
        assert_eq!(q.dequeue(a), Ok(Some(Bytes::from_static(b"x"))));
        assert_eq!(q.dequeue(a), Ok(None));
        assert_eq!(q.dequeue(999), Err(Status::NotFound));
    }
}
