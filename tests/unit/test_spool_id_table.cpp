// The segment spool's index table (src/spool/id_table.h): lookups stay right while it grows,
// shrinks, and moves values around on erase.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "spool/id_table.h"

using mailq::spool::detail::IdTable;

namespace {

struct Value {
  std::uint64_t id = 0;
  std::string text;  // movable, not trivially: moves must carry it along
};

// Every id of `ref` is found with its text, and the table holds nothing else.
void require_matches(const IdTable<Value>& t, const std::map<std::uint64_t, std::string>& ref) {
  REQUIRE(t.size() == ref.size());
  for (const auto& [id, text] : ref) {
    const Value* v = t.find(id);
    REQUIRE(v != nullptr);
    REQUIRE(v->id == id);
    REQUIRE(v->text == text);
  }
  std::vector<std::uint64_t> seen;
  for (const Value& v : t) seen.push_back(v.id);
  std::sort(seen.begin(), seen.end());
  std::vector<std::uint64_t> want;
  for (const auto& kv : ref) want.push_back(kv.first);
  REQUIRE(seen == want);
}

}  // namespace

TEST_CASE("the spool index finds every id across growth, erasure and shrinking",
          "[spool][segment][id-table]") {
  IdTable<Value> t;
  std::map<std::uint64_t, std::string> ref;
  CHECK(t.find(1) == nullptr);
  CHECK_FALSE(t.erase(1));

  // Sequential ids (as a queue hands them out) and random ones, through several growths.
  for (std::uint64_t id = 1; id <= 20000; ++id) {
    t.insert(Value{id, "s" + std::to_string(id)});
    ref[id] = "s" + std::to_string(id);
  }
  std::mt19937_64 rng(42);
  while (ref.size() < 40000) {
    const std::uint64_t id = rng();
    if (ref.count(id)) continue;
    t.insert(Value{id, "r" + std::to_string(id)});
    ref[id] = "r" + std::to_string(id);
  }
  require_matches(t, ref);
  CHECK(t.find(0) == nullptr);
  CHECK(t.find(20001) == nullptr);

  // Interleaved removals and inserts; every 10000 steps the whole table is checked.
  std::vector<std::uint64_t> ids;
  for (const auto& kv : ref) ids.push_back(kv.first);
  for (int step = 1; step <= 60000; ++step) {
    if (!ids.empty() && (rng() % 3 != 0)) {
      const std::size_t k = rng() % ids.size();
      const std::uint64_t id = ids[k];
      ids[k] = ids.back();
      ids.pop_back();
      REQUIRE(t.erase(id));
      REQUIRE(t.find(id) == nullptr);
      REQUIRE_FALSE(t.erase(id));
      ref.erase(id);
    } else {
      const std::uint64_t id = rng() | 1;
      if (ref.count(id)) continue;
      t.insert(Value{id, "i" + std::to_string(id)});
      ref[id] = "i" + std::to_string(id);
      ids.push_back(id);
    }
    if (step % 10000 == 0) require_matches(t, ref);
  }
  require_matches(t, ref);

  // Drained to a few (the table shrinks on the way), then grown again.
  while (ref.size() > 3) {
    const std::uint64_t id = ref.begin()->first;
    REQUIRE(t.erase(id));
    ref.erase(id);
  }
  require_matches(t, ref);
  for (std::uint64_t id = 100; id < 5100; ++id) {
    if (ref.count(id)) continue;
    t.insert(Value{id, "again"});
    ref[id] = "again";
  }
  require_matches(t, ref);
  t.clear();
  CHECK(t.size() == 0);
  CHECK(t.find(100) == nullptr);
}

TEST_CASE("the spool index keeps a reserved size and ids that collide in their home slot",
          "[spool][segment][id-table]") {
  IdTable<Value> t;
  t.reserve(1000);
  std::map<std::uint64_t, std::string> ref;
  // Ids differing only in high bits: the hash must spread them.
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const std::uint64_t id = (i << 40) | 7;
    t.insert(Value{id, std::to_string(i)});
    ref[id] = std::to_string(i);
  }
  require_matches(t, ref);
  // Erasing from the middle of clusters keeps the rest reachable (backward shift).
  for (std::uint64_t i = 0; i < 1000; i += 2) {
    REQUIRE(t.erase((i << 40) | 7));
    ref.erase((i << 40) | 7);
  }
  require_matches(t, ref);
}
