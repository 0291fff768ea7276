#include "core/delivery/mx.h"

#include <algorithm>

#include "core/text.h"

namespace mailq::detail {

MxPlan plan_mx(std::vector<MxRecord> records, const std::vector<std::string>& local_names,
               std::mt19937_64& rng, std::vector<MxRecord>* out) {
  out->clear();
  for (auto& r : records) {
    while (!r.exchange.empty() && r.exchange.back() == '.') r.exchange.pop_back();
    r.exchange = to_lower(r.exchange);
  }
  // RFC 7505: a single MX record with an empty exchange means "no mail here".
  if (records.size() == 1 && records[0].exchange.empty()) return MxPlan::null_mx;
  records.erase(std::remove_if(records.begin(), records.end(),
                               [](const MxRecord& r) { return r.exchange.empty(); }),
                records.end());
  if (records.empty()) return MxPlan::empty;
  std::shuffle(records.begin(), records.end(), rng);
  std::stable_sort(records.begin(), records.end(), [](const MxRecord& a, const MxRecord& b) {
    return a.preference < b.preference;
  });
  // RFC 5321 §5.1: if this host is among the MX hosts, only hosts with a lower preference may
  // be used; when there are none, the mail loops back to us.
  for (std::size_t i = 0; i < records.size(); ++i) {
    bool local = std::any_of(local_names.begin(), local_names.end(), [&](const std::string& n) {
      return to_lower(n) == records[i].exchange;
    });
    if (local) {
      std::uint16_t pref = records[i].preference;
      std::size_t keep = i;
      while (keep > 0 && records[keep - 1].preference == pref) --keep;
      records.resize(keep);
      if (records.empty()) return MxPlan::loops_to_self;
      break;
    }
  }
  *out = std::move(records);
  return MxPlan::ok;
}

bool cut_local_addresses(std::vector<Target>& targets,
                         const std::vector<std::string>& local_addresses) {
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (std::find(local_addresses.begin(), local_addresses.end(), targets[i].address) !=
        local_addresses.end()) {
      std::uint16_t pref = targets[i].preference;
      std::size_t keep = i;
      while (keep > 0 && targets[keep - 1].preference == pref) --keep;
      targets.resize(keep);
      return !targets.empty();
    }
  }
  return true;
}

}  // namespace mailq::detail
