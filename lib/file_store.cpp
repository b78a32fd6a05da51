// SPDX-License-Identifier: BSL-1.0
// file_store: the state in a JSON file replaced atomically, and a lease that is an flock.
#include <nxsys/auth/error.hpp>
#include <nxsys/auth/protocol.hpp>
#include <nxsys/auth/token_store.hpp>

#include "diag.hpp"
#include "secret_string.hpp"
#include "state_codec.hpp"

#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <openssl/crypto.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <new>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <utility>

namespace nxsys::auth {
namespace asio = boost::asio;
using boost::system::error_code;
using detail::corrupt;
using detail::fail;
using detail::io_failed;
using clock_type = std::chrono::steady_clock;

namespace {

// Tokens take a few kilobytes: anything much larger is not a store of ours.
constexpr std::size_t max_file_bytes = 1 << 20;

class unique_fd {
 public:
  explicit unique_fd(int fd = -1) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~unique_fd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

// The file's state: nullopt when there is no file. Blocking.
error_code read_state(const std::string& path, std::optional<stored_tokens>& out,
                      diagnostics& diag) {
  out.reset();
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) {
    if (errno == ENOENT) return {};
    return io_failed(diag, "cannot open", path, errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return io_failed(diag, "cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) return fail(errc::store_failed, diag, path + ": not a regular file");

  // Sized from fstat, grown if the file grows meanwhile; every buffer left behind is wiped.
  detail::secret_string buf(std::string(
      std::min<std::size_t>(static_cast<std::size_t>(st.st_size), max_file_bytes) + 1, '\0'));
  std::size_t len = 0;
  for (;;) {
    if (len == buf.size()) {
      if (buf.size() > max_file_bytes) return corrupt(diag, path, "larger than 1 MiB");
      detail::secret_string bigger(std::string(std::min(buf.size() * 2, max_file_bytes + 1), '\0'));
      std::memcpy(bigger.data(), buf.data(), len);
      buf = std::move(bigger);
    }
    const auto n = ::read(fd.get(), buf.data() + len, buf.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_failed(diag, "cannot read", path, errno);
    }
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }
  stored_tokens t;
  if (auto ec = detail::parse_stored_tokens(buf.view().substr(0, len), path, t, diag)) return ec;
  out = std::move(t);
  return {};
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Shared by every store of the process: two stores on one path must not pick the same name.
std::atomic<std::uint64_t> temp_counter{0};

struct temp_file {
  std::string path;
  bool keep = false;
  ~temp_file() {
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

error_code write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const auto n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return error_code(errno, boost::system::generic_category());
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

// Temporary file, fsync, rename, fsync of the directory: a crash at any point leaves the old
// file or the new one, whole. Blocking.
error_code replace_file(const std::string& path, std::string_view bytes, diagnostics& diag) {
  temp_file tmp;
  unique_fd fd;
  // A pid reused after a crash (or in another pid namespace) can meet a leftover name.
  for (int attempt = 0; fd.get() < 0; ++attempt) {
    tmp.path = path + ".tmp." + std::to_string(::getpid()) + "." +
               std::to_string(temp_counter.fetch_add(1, std::memory_order_relaxed));
    fd = unique_fd(::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.get() < 0 && (errno != EEXIST || attempt == 100)) {
      const int err = errno;
      tmp.path.clear();  // not ours to unlink
      return io_failed(diag, "cannot create a temporary file next to", path, err);
    }
  }
  // A umask may have taken bits from 0600 (never added any): the owner must read it back.
  if (::fchmod(fd.get(), 0600) != 0) return io_failed(diag, "cannot chmod", tmp.path, errno);
  if (auto ec = write_all(fd.get(), bytes))
    return io_failed(diag, "cannot write", tmp.path, ec.value());
  while (::fsync(fd.get()) != 0) {
    if (errno != EINTR) return io_failed(diag, "cannot fsync", tmp.path, errno);
  }
  // close() can report a deferred write error (NFS); the descriptor is gone either way.
  if (::close(fd.release()) != 0 && errno != EINTR)
    return io_failed(diag, "cannot close", tmp.path, errno);
  if (::rename(tmp.path.c_str(), path.c_str()) != 0)
    return io_failed(diag, "cannot rename a temporary file over", path, errno);
  tmp.keep = true;

  // Until the directory is synced the rename itself may not survive a crash. The new state is
  // in place by now, but not durable: that is still a failure.
  const auto dir = parent_dir(path);
  unique_fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0) return io_failed(diag, "cannot open directory", dir, errno);
  while (::fsync(dfd.get()) != 0) {
    if (errno != EINTR) return io_failed(diag, "cannot fsync directory", dir, errno);
  }
  return {};
}

// Compare-and-set. Saves of one process are serialized on its store thread; across processes
// the check and the rename are atomic only among holders of the lease (as the client saves).
error_code save_state(const std::string& path, const stored_tokens& next, std::string_view expected,
                      diagnostics& diag) {
  if (auto ec = detail::check_savable(next, diag)) return ec;
  std::optional<stored_tokens> current;
  if (auto ec = read_state(path, current, diag)) return ec;
  if (current) {
    if (current->refresh_token != expected)
      return fail(errc::store_conflict, diag, path + ": the stored refresh token changed");
  }
  const auto bytes = detail::serialize_stored_tokens(next);
  if (bytes.empty()) return fail(errc::store_failed, diag, "cannot serialize the tokens");
  return replace_file(path, bytes.view(), diag);
}

using completion_executor = asio::any_completion_executor;

// The handler's executor (the store's thread when it has none), kept busy until the handler
// runs: an io_context must not run out of work and return while its save is on our thread.
template <class Handler>
completion_executor tracked_executor(const Handler& h, asio::thread_pool& pool) {
  return asio::prefer(asio::get_associated_executor(h, pool.get_executor()),
                      asio::execution::outstanding_work.tracked);
}

template <class Handler, class... Args>
void complete(const completion_executor& ex, Handler h, Args... args) {
  asio::dispatch(ex, [h = std::move(h), ... args = std::move(args)]() mutable {
    std::move(h)(std::move(args)...);
  });
}

}  // namespace

struct file_store::state {
  state(std::string p, file_store_options o)
      : path(std::move(p)),
        lock_path(path + ".lock"),
        poll_max(
            std::max<std::chrono::milliseconds>(o.lock_poll_max, std::chrono::milliseconds(1))) {}

  // One acquire waiting for the lock: its own descriptor, so that two acquires of one process
  // exclude each other too (an flock belongs to an open file description).
  struct acquire_op {
    acquire_op(asio::thread_pool& pool, clock_type::time_point d,
               asio::any_completion_handler<acquire_signature> h)
        : deadline(d), work(tracked_executor(h, pool)), handler(std::move(h)), timer(pool) {}

    clock_type::time_point deadline;
    completion_executor work;
    asio::any_completion_handler<acquire_signature> handler;
    unique_fd fd;
    asio::steady_timer timer;
    std::chrono::milliseconds interval{1};
    std::atomic<bool> cancelled{false};  // by the handler's cancellation slot
  };

  // On the store's thread. flock is only ever tried, never waited in: a wait would hold the
  // thread (and every load and save behind it) for as long as another process refreshes.
  void try_lock(const std::shared_ptr<acquire_op>& op) {
    error_code ec;
    diagnostics diag;
    if (closing.load() || op->cancelled.load()) {
      ec = asio::error::operation_aborted;
    } else if (::flock(op->fd.get(), LOCK_EX | LOCK_NB) == 0) {
      remove_stale_temporaries();
      refresh_lease lease(std::make_shared<unique_fd>(std::move(op->fd)));
      complete(op->work, std::move(op->handler), error_code{}, std::move(lease), diagnostics{});
      return;
    } else if (errno != EWOULDBLOCK && errno != EINTR) {
      ec = io_failed(diag, "cannot lock", lock_path, errno);
    } else if (const auto now = clock_type::now(); now >= op->deadline) {
      ec = fail(errc::store_busy, diag, lock_path + ": held by another process until the deadline");
    } else {
      op->timer.expires_after(std::min<clock_type::duration>(op->interval, op->deadline - now));
      op->interval = std::min(op->interval * 2, poll_max);
      op->timer.async_wait([this, op](error_code) { try_lock(op); });
      return;
    }
    complete(op->work, std::move(op->handler), ec, refresh_lease(), std::move(diag));
  }

  // The client writes temporaries only while it holds the lock, so those found by a new holder
  // were left by a writer killed mid-save: nobody will rename them, and they hold secrets.
  void remove_stale_temporaries() const noexcept {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path p(path);
    const auto prefix = p.filename().string() + ".tmp.";
    const auto dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0) {
        std::error_code ignored;
        fs::remove(it->path(), ignored);
      }
    }
  }

  std::string path;
  std::string lock_path;
  std::chrono::milliseconds poll_max;
  // Set by the destructor: waiting acquires give up at their next poll.
  std::atomic<bool> closing{false};
  // Blocking file I/O and lock polls, never on the caller's threads. Everything posted here
  // may use the state by reference: the destructor joins this thread before the state goes.
  asio::thread_pool io{1};
};

file_store::file_store(std::string path, file_store_options opts) {
  diagnostics diag;
  if (path.empty()) {
    diag.client_message = "the token store's path is empty";
    throw error_with_diagnostics(make_error_code(errc::invalid_config), diag);
  }
  std::optional<stored_tokens> current;
  if (auto ec = read_state(path, current, diag)) throw error_with_diagnostics(ec, diag);
  s_ = std::make_shared<state>(std::move(path), opts);
}

// Pending loads and saves finish first; waiting acquires complete with operation_aborted
// within one poll interval.
file_store::~file_store() {
  s_->closing.store(true);
  if (s_->io.get_executor().running_in_this_thread()) {
    // From a handler with no associated executor (those run on the store's thread), which
    // cannot join itself: another thread waits for it, then frees the state.
    std::thread([s = std::move(s_)] { s->io.join(); }).detach();
    return;
  }
  s_->io.join();
}

const std::string& file_store::path() const noexcept {
  return s_->path;
}

void file_store::do_load(asio::any_completion_handler<load_signature> h) {
  auto work = tracked_executor(h, s_->io);
  asio::post(s_->io, [s = s_.get(), h = std::move(h), work = std::move(work)]() mutable {
    std::optional<stored_tokens> out;
    diagnostics diag;
    const auto ec = read_state(s->path, out, diag);
    complete(work, std::move(h), ec, std::move(out), std::move(diag));
  });
}

void file_store::do_acquire(clock_type::time_point deadline,
                            asio::any_completion_handler<acquire_signature> h) {
  auto slot = asio::get_associated_cancellation_slot(h);
  auto op = std::make_shared<state::acquire_op>(s_->io, deadline, std::move(h));
  // Cancellation is noticed at the next poll (lock_poll_max at most), on the store's thread.
  if (slot.is_connected())
    slot.assign([w = std::weak_ptr<state::acquire_op>(op)](asio::cancellation_type_t) {
      if (auto o = w.lock()) o->cancelled = true;
    });
  asio::post(s_->io, [s = s_.get(), op = std::move(op)] {
    op->fd = unique_fd(::open(s->lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600));
    if (op->fd.get() < 0) {
      diagnostics diag;
      const auto ec = io_failed(diag, "cannot open the lock file", s->lock_path, errno);
      complete(op->work, std::move(op->handler), ec, refresh_lease(), std::move(diag));
      return;
    }
    s->try_lock(op);
  });
}

void file_store::do_save(stored_tokens next, std::string expected,
                         asio::any_completion_handler<save_signature> h) {
  auto work = tracked_executor(h, s_->io);
  asio::post(s_->io, [s = s_.get(), next = std::move(next),
                      expected = detail::secret_string(std::move(expected)), h = std::move(h),
                      work = std::move(work)]() mutable {
    diagnostics diag;
    const auto ec = save_state(s->path, next, expected.view(), diag);
    complete(work, std::move(h), ec, std::move(diag));
  });
}

}  // namespace nxsys::auth
