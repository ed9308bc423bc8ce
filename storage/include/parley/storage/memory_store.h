#pragma once
// parley::storage::memory_store: the storage interface (store.h) kept in
// memory, for tests of code above storage (the tenant core) that want no
// database, no files and outages on command. Not a production backend: nothing
// survives the process, and parleyd cannot be configured to use it.
//
//   auto made = make_memory_store(options);          // result<unique_ptr<memory_store>>
//   auto& store = *made.value();
//
// It keeps store.h's contract as the SQL backends do and passes the same
// contract suite (tests/storage/store_contract_tests.cpp): one writer thread
// with a bounded queue and group commit (batch_max, batch_delay; stats count
// its batches), reader threads served round robin by tenant, completions on
// those threads (relaxed messages: on the caller's, once queued), the same
// duplicate, conflict, paging, retention and prune rules. Where SQL has a
// database, it has a memory_database: stores made on the same one see the same
// data, so a store destroyed and made again (a restart) finds what the first
// committed, and destroying a store drains its queue into it first.
//
// Outages are a test control instead of a network: see set_reachable.
#include <cstddef>
#include <memory>

#include "parley/storage/result.h"
#include "parley/storage/store.h"

namespace parley::storage {

// The data a memory store keeps (its tables); shared by the stores made on it.
class memory_database;
std::shared_ptr<memory_database> make_memory_database();

class memory_store : public store {
public:
    // --- test controls ---

    // The database goes away (false) or comes back (true). While it is away:
    // ready() is false; writes stay queued, in order; a message whose sender
    // waits (durability commit) completes with `unavailable` once it has waited
    // `unavailable_after`, every other write waits for the database (as
    // store.h says, including the queue bounds); reads, load_open_state,
    // prune and schema_version fail with `unavailable` at once. Back again:
    // the queued writes are committed in order and stats().reconnects counts
    // one. A batch the writer had already taken still commits.
    virtual void set_reachable(bool reachable) = 0;

    // From hold_read_replies() on, reads still run in their turn (they see the
    // data as it is then) but their callbacks wait; release_read_replies()
    // stops holding and hands the waiting ones to a reader thread, which runs
    // them in the order their reads finished. A test acts between a read and its answer (a resume
    // whose replay is in progress). held_read_replies() says how many wait.
    // Synchronous calls (load_open_state, prune) are never held.
    virtual void hold_read_replies() = 0;
    virtual void release_read_replies() = 0;
    virtual std::size_t held_read_replies() const = 0;
};

// A memory store on `database`, or on a new, empty one when it is null. Errors:
// bad_request for options no store accepts (as open_store checks them).
// backend_name() is "memory"; schema_version() is always binary_schema_version().
result<std::unique_ptr<memory_store>> make_memory_store(const store_options& options = {},
                                                        std::shared_ptr<memory_database> database = nullptr);

}  // namespace parley::storage
