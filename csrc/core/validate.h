// Host-side validation of one slot's inputs, shared by the engines.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "config.h"
#include "request.h"

namespace tiemb {

/// Checks a lookup group's slot settings once, when the group is built: the
/// one copy the CPU and GPU engines share. At least one slot, no more
/// features than slot_num, existing tables, known enums, float32/float16
/// outputs, default_id only in safe mode and within the table
/// (`table_rows(t)`: rows of table t of `num_tables`). Throws tiemb::error
/// naming the slot.
void check_slot_configs(const engine_config& cfg, const std::vector<slot_config>& slots, int64_t num_tables,
                        const std::function<int64_t(int32_t)>& table_rows);

/// The checks that need no element of the arrays: dtypes, lengths, limits
/// from the config, num_rows. For inputs in device memory; throws like
/// check_slot.
void check_slot_shape(const engine_config& cfg, const slot_config& sc, const slot_request& req,
                      int64_t s);

/// Checks every input of slot `s` whose data is in host memory (dtypes,
/// lengths, limits from the config, segment order, id ranges) and returns
/// its output row count. When `offsets` is not null it receives the slot's
/// row offsets (rows + 1 entries; room for max_batch_size + 1). Throws
/// tiemb::error naming the slot; the messages are the ones users see.
int64_t check_slot(const engine_config& cfg, const slot_config& sc, int64_t table_rows,
                   const slot_request& req, int64_t s, int64_t* offsets);

}  // namespace tiemb
