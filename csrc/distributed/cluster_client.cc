#include "cluster_client.h"

#include <hiredis.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <strings.h>
#include <thread>

#include "../core/error.h"

namespace tiemb {

constexpr int kClusterSlots = 16384;  // keep in sync with cluster_address.cc

namespace {

timeval to_timeval(int ms) {
  timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

// "MOVED 3999 127.0.0.1:6381" / "ASK ..." -> endpoint.
bool parse_redirect(const char* msg, size_t len, const char* kind, cluster_endpoint* ep) {
  const size_t klen = std::strlen(kind);
  if (len <= klen || std::strncmp(msg, kind, klen) != 0 || msg[klen] != ' ') return false;
  const std::string s(msg, len);
  const size_t sp = s.find(' ', klen + 1);
  const size_t colon = s.rfind(':');
  if (sp == std::string::npos || colon == std::string::npos || colon < sp) return false;
  ep->host = s.substr(sp + 1, colon - sp - 1);
  ep->port = std::atoi(s.c_str() + colon + 1);
  return true;
}

bool starts_with(const char* s, size_t len, const char* prefix) {
  const size_t n = std::strlen(prefix);
  return len >= n && std::strncmp(s, prefix, n) == 0;
}

// Replies of pooled connections are parsed straight into the caller's
// cluster_reply (hiredis's reader with our object functions): no reply
// object and no string copy is allocated per value, and a value's bytes land
// in a string whose capacity is reused from call to call. The sink is the
// reader's privdata while run_commands reads; CLUSTER SLOTS (nested arrays)
// uses connections of its own with hiredis's default objects.
struct reply_sink {
  cluster_reply* out = nullptr;  // the command being read
  int type = 0;                  // REDIS_REPLY_* of its top-level reply
  std::string error;             // an error reply's text (redirects, CLUSTERDOWN, ...)
  int64_t bytes = 0;             // string payload bytes read
};

void* sink_string(const redisReadTask* task, char* str, size_t len) {
  auto* sink = static_cast<reply_sink*>(task->privdata);
  if (task->parent != nullptr) return sink;  // inside an array: not a reply run_commands asks for
  sink->type = task->type;
  if (task->type == REDIS_REPLY_ERROR) {
    sink->error.assign(str, len);
  } else {
    sink->out->value.assign(str, len);
    sink->bytes += static_cast<int64_t>(len);
  }
  return sink;
}
void* sink_array(const redisReadTask* task) {
  auto* sink = static_cast<reply_sink*>(task->privdata);
  if (task->parent == nullptr) sink->type = REDIS_REPLY_ARRAY;
  return sink;
}
void* sink_integer(const redisReadTask* task, long long value) {
  auto* sink = static_cast<reply_sink*>(task->privdata);
  if (task->parent != nullptr) return sink;
  sink->type = REDIS_REPLY_INTEGER;
  sink->out->integer = value;
  return sink;
}
void* sink_nil(const redisReadTask* task) {
  auto* sink = static_cast<reply_sink*>(task->privdata);
  if (task->parent == nullptr) sink->type = REDIS_REPLY_NIL;
  return sink;
}
void sink_free(void*) {}  // the sink belongs to run_commands

redisReplyObjectFunctions* sink_functions() {
  static redisReplyObjectFunctions fns = [] {
    redisReplyObjectFunctions f{};  // members of newer hiredis (RESP3 types) stay null
    f.createString = sink_string;
    // The element count is an int in hiredis 0.14 and a size_t in 1.x.
    f.createArray = [](const redisReadTask* task, auto) -> void* { return sink_array(task); };
    f.createInteger = sink_integer;
    f.createNil = sink_nil;
    f.freeObject = sink_free;
    return f;
  }();
  return &fns;
}

// A command in the protocol's own form (RESP), appended to `out`: one
// reused buffer per node per call instead of hiredis formatting (and
// allocating) each command.
void append_resp(std::string& out, int argc, const char* const* argv, const size_t* argl) {
  char num[32];
  out += '*';
  out.append(num, static_cast<size_t>(std::snprintf(num, sizeof num, "%d", argc)));
  out += "\r\n";
  for (int k = 0; k < argc; ++k) {
    out += '$';
    out.append(num, static_cast<size_t>(std::snprintf(num, sizeof num, "%zu", argl[k])));
    out += "\r\n";
    out.append(argv[k], argl[k]);
    out += "\r\n";
  }
}

// run_commands' scratch, per calling thread: reused across calls, so a call
// allocates nothing once the buffers have grown to its size.
struct run_scratch {
  std::vector<size_t> todo, retry;
  std::vector<char> asking;
  std::vector<std::pair<size_t, cluster_endpoint>> ask_target;
  std::vector<std::pair<void*, std::vector<size_t>>> batches;  // (node, its commands); inner vectors kept
  size_t num_batches = 0;
  std::vector<redisContext*> conns;
  std::string resp;
  reply_sink sink;
  cluster_reply asking_reply;
};

// The argument that routes a command: argv[1], except for EVAL / EVALSHA
// (script, numkeys, key...), routed by their first key, argv[3] (a script
// must name at least one key: a compare-and-set on one key is what tiemb
// runs, tiemb/distributed/publish.py).
int routing_arg(const char* const* argv, const size_t* argl, int argc) {
  auto is = [&](const char* name) {
    const size_t n = std::strlen(name);
    return argl[0] == n && strncasecmp(argv[0], name, n) == 0;
  };
  if (is("EVAL") || is("EVALSHA")) {
    TIEMB_EXPECT(argc >= 4 && !(argl[2] == 1 && argv[2][0] == '0'), "a cluster ", std::string(argv[0], argl[0]),
                 " must name at least one key (it is routed by its first key)");
    return 3;
  }
  return 1;
}

}  // namespace

struct cluster_client::node {
  cluster_endpoint ep;
  std::mutex mutex;
  std::vector<redisContext*> idle;  // pooled connections
  ~node() {
    for (redisContext* c : idle) redisFree(c);
  }
};

cluster_client::cluster_client(const std::string& address, int timeout_ms, int retries)
    : address_(address), seeds_(parse_cluster_address(address)), timeout_ms_(timeout_ms), retries_(retries) {
  TIEMB_EXPECT(timeout_ms > 0, "tiemb/distributed_timeout_ms must be > 0, got ", timeout_ms);
  TIEMB_EXPECT(retries >= 0, "tiemb/distributed_retries must be >= 0, got ", retries);
  slot_node_.assign(kClusterSlots, -1);
  refresh_slots();
}

cluster_client::~cluster_client() = default;

redisContext* cluster_client::connect(const cluster_endpoint& ep) const {
  redisContext* c = redisConnectWithTimeout(ep.host.c_str(), ep.port, to_timeval(timeout_ms_));
  if (c == nullptr) return nullptr;
  if (c->err) {
    redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, to_timeval(timeout_ms_));
  return c;
}

cluster_client::node* cluster_client::node_for(const cluster_endpoint& ep) {
  for (auto& n : nodes_) {
    if (n->ep.host == ep.host && n->ep.port == ep.port) return n.get();
  }
  nodes_.push_back(std::make_unique<node>());
  nodes_.back()->ep = ep;
  return nodes_.back().get();
}

void cluster_client::refresh_slots() {
  std::lock_guard<std::mutex> refresh_lock(refresh_mutex_);
  ++slot_refreshes_;
  // Ask the seeds first, then every node we know: any live node has the map.
  std::vector<cluster_endpoint> ask = seeds_;
  {
    std::shared_lock<std::shared_mutex> lk(map_mutex_);
    for (auto& n : nodes_) ask.push_back(n->ep);
  }
  std::string problems;
  for (const cluster_endpoint& ep : ask) {
    redisContext* c = connect(ep);
    if (c == nullptr) {
      problems += (problems.empty() ? "" : "; ") + ep.str() + " unreachable";
      continue;
    }
    auto* r = static_cast<redisReply*>(redisCommand(c, "CLUSTER SLOTS"));
    if (r == nullptr) {
      problems += (problems.empty() ? "" : "; ") + ep.str() + ": " + c->errstr;
      redisFree(c);
      continue;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      const std::string msg(r->str, r->len);
      freeReplyObject(r);
      redisFree(c);
      TIEMB_EXPECT(msg.find("cluster support disabled") == std::string::npos, "tiemb/distributed_address '",
                   address_, "': the Redis at ", ep.str(),
                   " is not a cluster (cluster support disabled); tiemb needs a Redis Cluster");
      problems += (problems.empty() ? "" : "; ") + ep.str() + ": " + msg;
      continue;
    }
    std::vector<std::pair<std::pair<int, int>, cluster_endpoint>> ranges;
    if (r->type == REDIS_REPLY_ARRAY) {
      for (size_t i = 0; i < r->elements; ++i) {
        redisReply* e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3) continue;
        redisReply* master = e->element[2];
        if (master->type != REDIS_REPLY_ARRAY || master->elements < 2) continue;
        cluster_endpoint m{std::string(master->element[0]->str, master->element[0]->len),
                           static_cast<int>(master->element[1]->integer)};
        if (m.host.empty()) m.host = ep.host;  // a node that does not know its own address
        ranges.push_back({{static_cast<int>(e->element[0]->integer), static_cast<int>(e->element[1]->integer)}, m});
      }
    }
    freeReplyObject(r);
    redisFree(c);
    if (ranges.empty()) {
      problems += (problems.empty() ? "" : "; ") + ep.str() + ": no slots assigned";
      continue;
    }
    std::unique_lock<std::shared_mutex> lk(map_mutex_);
    std::fill(slot_node_.begin(), slot_node_.end(), -1);
    for (auto& rg : ranges) {
      node* n = node_for(rg.second);
      int32_t idx = 0;
      for (; nodes_[static_cast<size_t>(idx)].get() != n; ++idx) {
      }
      for (int s = rg.first.first; s <= rg.first.second && s < kClusterSlots; ++s) slot_node_[static_cast<size_t>(s)] = idx;
    }
    return;
  }
  throw error(detail::concat("tiemb/distributed_address '", address_, "': no reachable cluster node (", problems, ")"));
}

redisContext* cluster_client::borrow(node& n) {
  {
    std::lock_guard<std::mutex> lk(n.mutex);
    if (!n.idle.empty()) {
      redisContext* c = n.idle.back();
      n.idle.pop_back();
      return c;
    }
  }
  redisContext* c = connect(n.ep);
  if (c != nullptr) {
    c->reader->fn = sink_functions();  // pooled connections only serve run_commands
    c->reader->maxbuf = 0;             // keep the read buffer: no free and malloc per call
  }
  return c;
}

void cluster_client::give_back(node& n, redisContext* c, bool broken) {
  if (c == nullptr) return;
  if (broken || c->err) {
    ++reconnects_;
    redisFree(c);
    return;
  }
  std::lock_guard<std::mutex> lk(n.mutex);
  n.idle.push_back(c);
}

void cluster_client::get_many(const std::vector<std::string>& keys, std::vector<cluster_reply>* replies) {
  get_many(keys.data(), keys.size(), replies);
}

void cluster_client::get_many(const std::string* keys, size_t n, std::vector<cluster_reply>* replies) {
  run_commands(n, [](const void* ctx, size_t i, const char** argv, size_t* argl) {
    const std::string& k = static_cast<const std::string*>(ctx)[i];
    argv[0] = "GET";
    argl[0] = 3;
    argv[1] = k.data();
    argl[1] = k.size();
    return 2;
  }, keys, replies);
}

void cluster_client::run(const std::vector<std::vector<std::string>>& cmds, std::vector<cluster_reply>* replies) {
  for (const auto& c : cmds) {
    TIEMB_EXPECT(c.size() >= 2 && c.size() <= static_cast<size_t>(kMaxArgs), "a cluster command needs a name, a key "
                 "and at most ", kMaxArgs - 2, " more arguments, got ", c.size(), " parts");
  }
  run_commands(cmds.size(), [](const void* ctx, size_t i, const char** argv, size_t* argl) {
    const auto& c = static_cast<const std::vector<std::vector<std::string>>*>(ctx)->at(i);
    for (size_t a = 0; a < c.size(); ++a) {
      argv[a] = c[a].data();
      argl[a] = c[a].size();
    }
    return static_cast<int>(c.size());
  }, &cmds, replies);
}

void cluster_client::run_commands(size_t count, command_fn fn, const void* ctx, std::vector<cluster_reply>* replies) {
  // Reused, not reassigned: the reply strings keep their capacity.
  if (replies->size() < count) replies->resize(count);
  for (size_t i = 0; i < count; ++i) {
    cluster_reply& r = (*replies)[i];
    r.nil = true;
    r.value.clear();
    r.integer = 0;
    r.is_integer = false;
  }
  struct args {
    const char* argv[kMaxArgs];
    size_t argl[kMaxArgs];
    int argc;
  };
  auto command = [&](size_t i) {
    args a;
    a.argc = fn(ctx, i, a.argv, a.argl);
    return a;
  };
  auto key_of = [&](size_t i) {
    const args a = command(i);
    const int k = routing_arg(a.argv, a.argl, a.argc);
    return std::string(a.argv[k], a.argl[k]);
  };
  auto name_of = [&](size_t i) {
    const args a = command(i);
    return std::string(a.argv[0], a.argl[0]);
  };
  thread_local run_scratch scratch;
  run_scratch& sc = scratch;
  std::vector<size_t>& todo = sc.todo;
  todo.resize(count);
  for (size_t i = 0; i < count; ++i) todo[i] = i;
  // Only commands that meet an ASK redirect get an entry.
  auto& ask_target = sc.ask_target;
  ask_target.clear();
  std::vector<char>& asking = sc.asking;
  asking.assign(count, 0);
  auto ask_of = [&](size_t i) -> const cluster_endpoint& {
    for (auto& e : ask_target) {
      if (e.first == i) return e.second;
    }
    throw error("internal: ASK target lost");
  };
  reply_sink& sink = sc.sink;
  std::string last_problem;
  int failures = 0;  // rounds that met a lost connection or a cluster not ready
  int redirect_rounds = 0;
  while (!todo.empty()) {
    // Group the pending commands by node (the inner vectors keep their capacity).
    auto& batches = sc.batches;
    size_t& num_batches = sc.num_batches;
    num_batches = 0;
    {
      std::unique_lock<std::shared_mutex> lk(map_mutex_);
      for (size_t i : todo) {
        const args a = command(i);
        node* n = nullptr;
        if (asking[i]) {
          n = node_for(ask_of(i));
        } else {
          const int k = routing_arg(a.argv, a.argl, a.argc);
          const int32_t idx = slot_node_[static_cast<size_t>(key_hash_slot(a.argv[k], a.argl[k]))];
          if (idx >= 0) n = nodes_[static_cast<size_t>(idx)].get();
        }
        TIEMB_EXPECT(n != nullptr, "Redis Cluster '", address_, "': no node serves the hash slot of key '", key_of(i),
                     "' (the cluster is missing slots)");
        size_t b = 0;
        for (; b < num_batches && batches[b].first != n; ++b) {
        }
        if (b == num_batches) {
          if (batches.size() == num_batches) batches.emplace_back();
          batches[b].first = n;
          batches[b].second.clear();
          ++num_batches;
        }
        batches[b].second.push_back(i);
      }
    }
    auto node_of = [&](size_t b) -> node& { return *static_cast<node*>(batches[b].first); };
    std::vector<size_t>& retry = sc.retry;
    retry.clear();
    bool need_refresh = false;
    bool round_failed = false;
    // Send to every node first, then read: the round trips overlap.
    std::vector<redisContext*>& conns = sc.conns;
    conns.assign(num_batches, nullptr);
    for (size_t b = 0; b < num_batches; ++b) {
      redisContext* c = borrow(node_of(b));
      conns[b] = c;
      if (c == nullptr) continue;
      std::string& resp = sc.resp;
      resp.clear();
      static const char* const kAsking[] = {"ASKING"};
      static const size_t kAskingLen[] = {6};
      for (size_t i : batches[b].second) {
        if (asking[i]) append_resp(resp, 1, kAsking, kAskingLen);
        args a = command(i);
        for (int k = 0; k < a.argc; ++k) bytes_out_ += static_cast<int64_t>(a.argl[k]);
        append_resp(resp, a.argc, a.argv, a.argl);
        ++commands_;
      }
      redisAppendFormattedCommand(c, resp.data(), resp.size());
      // Flush the whole pipeline now so the nodes work in parallel.
      int done = 0;
      while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK) break;
      }
    }
    for (size_t b = 0; b < num_batches; ++b) {
      node& n = node_of(b);
      redisContext* c = conns[b];
      ++round_trips_;
      bool broken = c == nullptr;
      std::string node_problem = c == nullptr ? "cannot connect" : "";
      if (c != nullptr) c->reader->privdata = &sink;
      for (size_t i : batches[b].second) {
        if (broken) {
          retry.push_back(i);
          continue;
        }
        void* raw = nullptr;
        if (asking[i]) {
          sink.out = &sc.asking_reply;
          if (redisGetReply(c, &raw) != REDIS_OK) {
            broken = true;
            node_problem = c->errstr;
            retry.push_back(i);
            continue;
          }
          asking[i] = 0;
        }
        cluster_reply& out = (*replies)[i];
        sink.out = &out;
        sink.type = 0;
        sink.bytes = 0;
        raw = nullptr;
        if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
          broken = true;
          node_problem = c->err ? c->errstr : "no reply";
          retry.push_back(i);
          continue;
        }
        cluster_endpoint ep;
        const char* err = sink.error.data();
        const size_t err_len = sink.error.size();
        if (sink.type == REDIS_REPLY_ERROR) {
          if (parse_redirect(err, err_len, "MOVED", &ep)) {
            ++redirects_;
            need_refresh = true;
            retry.push_back(i);
          } else if (parse_redirect(err, err_len, "ASK", &ep)) {
            ++redirects_;
            bool known = false;
            for (auto& e : ask_target) {
              if (e.first == i) {
                e.second = ep;
                known = true;
              }
            }
            if (!known) ask_target.emplace_back(i, ep);
            asking[i] = 1;
            retry.push_back(i);
          } else if (starts_with(err, err_len, "TRYAGAIN") || starts_with(err, err_len, "CLUSTERDOWN") ||
                     starts_with(err, err_len, "LOADING") || starts_with(err, err_len, "MASTERDOWN")) {
            node_problem = sink.error;
            need_refresh = true;
            retry.push_back(i);
            round_failed = true;  // counts against the retries, like a lost connection
          } else {
            const std::string msg = sink.error;
            give_back(n, c, true);  // unread replies remain in its pipeline
            for (size_t rest = b + 1; rest < num_batches; ++rest) give_back(node_of(rest), conns[rest], true);
            throw error(detail::concat("Redis Cluster node ", n.ep.str(), ": ", name_of(i), " '", key_of(i),
                                       "' failed: ", msg));
          }
        } else if (sink.type == REDIS_REPLY_STRING || sink.type == REDIS_REPLY_STATUS) {
          out.nil = false;
          bytes_in_ += sink.bytes;
        } else if (sink.type == REDIS_REPLY_INTEGER) {
          out.nil = false;
          out.is_integer = true;
        } else {
          out.nil = true;
          out.value.clear();  // an array's elements are not a reply run_commands asks for
        }
      }
      give_back(n, c, broken);
      if (broken) {
        need_refresh = true;
        round_failed = true;
        last_problem = detail::concat("node ", n.ep.str(), ": ", node_problem);
      } else if (!node_problem.empty()) {
        last_problem = detail::concat("node ", n.ep.str(), ": ", node_problem);
      }
    }
    if (retry.empty()) break;
    if (round_failed && ++failures > retries_) {
      throw error(detail::concat("Redis Cluster '", address_, "': ", retry.size(), " of ", count,
                                 " commands failed after ", retries_, " retries (", last_problem,
                                 "); first key '", key_of(retry.front()), "'"));
    }
    TIEMB_EXPECT(++redirect_rounds < 64 + 16 * (retries_ + 1), "Redis Cluster '", address_,
                 "': too many redirects for key '", key_of(retry.front()), "'");
    if (round_failed) {
      // Back off so that a failover can complete (the cluster promotes a
      // replica after its cluster-node-timeout); bounded by timeout_ms.
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(timeout_ms_, 100 << std::min(failures, 6))));
    }
    if (need_refresh) {
      try {
        refresh_slots();
      } catch (const error& e) {
        last_problem = e.what();
        if (++failures > retries_) throw error(detail::concat("Redis Cluster '", address_, "': ", last_problem));
      }
    }
    todo.swap(retry);
  }
}

std::vector<std::string> cluster_client::masters() const {
  std::shared_lock<std::shared_mutex> lk(map_mutex_);
  std::vector<char> used(nodes_.size(), 0);
  for (int32_t idx : slot_node_) {
    if (idx >= 0) used[static_cast<size_t>(idx)] = 1;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (used[i]) out.push_back(nodes_[i]->ep.str());
  }
  return out;
}

cluster_stats cluster_client::stats() const {
  cluster_stats s;
  s.round_trips = round_trips_;
  s.commands = commands_;
  s.bytes_in = bytes_in_;
  s.bytes_out = bytes_out_;
  s.redirects = redirects_;
  s.reconnects = reconnects_;
  s.slot_refreshes = slot_refreshes_;
  return s;
}

}  // namespace tiemb
