// tiemb._C's Redis Cluster part: the cluster client and remote tables
// (tiemb/distributed uses them; tests drive them directly).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "../csrc/core/error.h"
#include "../csrc/distributed/cluster_client.h"
#include "../csrc/distributed/remote_table.h"
#include "common.h"

namespace py = pybind11;
using namespace tiemb;

namespace {

py::object reply_object(const cluster_reply& r) {
  if (r.nil) return py::none();
  if (r.is_integer) return py::int_(r.integer);
  return py::bytes(r.value);
}

std::vector<std::vector<std::string>> to_commands(const py::list& cmds) {
  std::vector<std::vector<std::string>> out;
  out.reserve(cmds.size());
  for (const auto& c : cmds) {
    std::vector<std::string> argv;
    for (const auto& a : c) {
      if (py::isinstance<py::bytes>(a)) {
        argv.push_back(a.cast<std::string>());
      } else {
        argv.push_back(py::str(a).cast<std::string>());
      }
    }
    TIEMB_EXPECT(argv.size() >= 2, "a cluster command needs a name and a key, got ", argv.size(), " parts");
    out.push_back(std::move(argv));
  }
  return out;
}

}  // namespace

void bind_distributed(py::module_& m) {
  m.def("redis_compiled", [] {
#ifdef TIEMB_WITH_REDIS
    return true;
#else
    return false;
#endif
  }, "True when this build links hiredis (tiemb/enable_distributed works).");
  m.def("parse_cluster_address", [](const std::string& address) {
    std::vector<std::pair<std::string, int>> out;
    for (const auto& e : parse_cluster_address(address)) out.emplace_back(e.host, e.port);
    return out;
  }, py::arg("address"));
  m.def("key_hash_slot", [](const py::bytes& key) {
    const std::string k = key;
    return key_hash_slot(k.data(), k.size());
  }, py::arg("key"));

  py::class_<cluster_client, std::shared_ptr<cluster_client>>(m, "ClusterClient")
      .def(py::init([](const std::string& address, int timeout_ms, int retries) {
             py::gil_scoped_release release;
             return std::make_shared<cluster_client>(address, timeout_ms, retries);
           }),
           py::arg("address"), py::arg("timeout_ms"), py::arg("retries"))
      .def("run", [](cluster_client& c, const py::list& cmds) {
        auto argv = to_commands(cmds);
        std::vector<cluster_reply> replies;
        {
          py::gil_scoped_release release;
          c.run(argv, &replies);
        }
        py::list out;
        for (const auto& r : replies) out.append(reply_object(r));
        return out;
      }, py::arg("commands"),
         "Runs [name, key, args...] commands, one pipelined round trip per node; returns per command None "
         "(nil), bytes or int.")
      .def("masters", &cluster_client::masters)
      .def("stats", [](const cluster_client& c) {
        const cluster_stats s = c.stats();
        return bind::counters({{"round_trips", s.round_trips}, {"commands", s.commands}, {"bytes_in", s.bytes_in},
                               {"bytes_out", s.bytes_out}, {"redirects", s.redirects}, {"reconnects", s.reconnects},
                               {"slot_refreshes", s.slot_refreshes}});
      })
      .def_property_readonly("address", &cluster_client::address);

  py::class_<remote_table, std::shared_ptr<remote_table>>(m, "RemoteTable")
      .def(py::init([](std::shared_ptr<cluster_client> client, const std::string& name, int dtype_code, int64_t rows,
                       int64_t dim, int64_t block_rows, const std::vector<std::string>& layers,
                       const std::vector<uint16_t>& block_layer, const std::vector<int64_t>& host_ids) {
             remote_layout l{name, static_cast<dtype>(dtype_code), rows, dim, block_rows, layers, block_layer};
             py::gil_scoped_release release;
             return std::make_shared<remote_table>(std::move(client), std::move(l), host_ids);
           }),
           py::arg("client"), py::arg("name"), py::arg("dtype"), py::arg("rows"), py::arg("dim"), py::arg("block_rows"),
           py::arg("layers"), py::arg("block_layer"), py::arg("host_ids"))
      .def("update", [](remote_table& t, const std::vector<std::string>& layers, const std::vector<uint16_t>& block_layer,
                        const std::vector<int64_t>& changed_ids) {
        remote_layout l{t.name(), t.type(), t.rows(), t.dim(), t.block_rows(), layers, block_layer};
        py::gil_scoped_release release;
        t.update(std::move(l), changed_ids);
      }, py::arg("layers"), py::arg("block_layer"), py::arg("changed_ids"))
      .def("stats", [](const remote_table& t) {
        const remote_stats s = t.stats();
        return bind::counters({{"host_hits", s.host_hits}, {"cluster_rows", s.cluster_rows},
                               {"cluster_values", s.cluster_values}, {"host_rows", s.host_rows},
                               {"refreshes", s.refreshes}});
      })
      .def("changed_since", [](const remote_table& t, int64_t since) -> py::tuple {
        std::vector<int64_t> ids;
        int64_t now = 0;
        const bool known = t.changed_since(since, &ids, &now);
        return py::make_tuple(now, known ? py::cast(ids) : py::none());
      }, py::arg("since"),
           "(refreshes now, sorted ids the refreshes after `since` changed), or (now, None) when the change log "
           "(the last 64 refreshes, at most `rows` ids) no longer reaches back to `since`: every row may have changed")
      .def_property_readonly("refreshes", &remote_table::refreshes)
      .def_property_readonly("rows", &remote_table::rows)
      .def_property_readonly("dim", &remote_table::dim)
      .def_property_readonly("name", &remote_table::name);
}
