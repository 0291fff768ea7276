// Choosing between the two durable spools: layout names, what a directory holds, and
// open_spool, which never opens one layout's directory as the other.
#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "mailq/spool/file_spool.h"
#include "mailq/spool/layout.h"
#include "support/spool_fixtures.h"

using mailq::spool::detect_layout;
using mailq::spool::Layout;
using mailq::spool::open_spool;
using mailq::spool::parse_layout;
using namespace mailq::spool_test;

TEST_CASE("layout names parse and print, nothing else parses", "[spool][layout]") {
  CHECK(parse_layout("files") == Layout::files);
  CHECK(parse_layout("segments") == Layout::segments);
  CHECK(std::string(mailq::spool::to_string(Layout::files)) == "files");
  CHECK(std::string(mailq::spool::to_string(Layout::segments)) == "segments");
  for (const char* bad : {"", "file", "Files", "segment", "segments ", "auto"})
    CHECK_FALSE(parse_layout(bad).has_value());
}

TEST_CASE("detect_layout reads what a directory holds", "[spool][layout]") {
  TempDir dir;
  ManualClock clock;
  CHECK_FALSE(detect_layout(dir / "missing").has_value());
  CHECK_FALSE(detect_layout(dir.path()).has_value());  // empty: either may be created

  {
    auto s = open_spool(dir / "seg", clock, Layout::segments);
    INFO((s ? std::string() : s.error().message));
    REQUIRE(s);
    insert_ok(**s, clock, sample_record(1), "body\r\n");
    (*s)->flush();
  }
  CHECK(detect_layout(dir / "seg") == Layout::segments);

  {
    auto s = open_spool(dir / "files", clock, Layout::files);
    REQUIRE(s);
    CHECK(detect_layout(dir / "files") == Layout::files);  // queue/ exists, still empty
    insert_ok(**s, clock, sample_record(1), "body\r\n");
    (*s)->flush();
  }
  CHECK(detect_layout(dir / "files") == Layout::files);
}

TEST_CASE(
    "choose_layout keeps the layout a directory holds and makes a new spool a segment spool, "
    "whose locator names a segment file that exists",
    "[spool][layout]") {
  TempDir dir;
  ManualClock clock;
  using mailq::spool::choose_layout;
  CHECK(mailq::spool::kDefaultLayout == Layout::segments);
  CHECK(choose_layout(dir / "new", std::nullopt) == Layout::segments);
  CHECK(choose_layout(dir / "new", Layout::files) == Layout::files);
  {
    auto f = open_spool(dir / "files", clock, Layout::files);
    REQUIRE(f);
    insert_ok(**f, clock, sample_record(8), "eight\r\n");
    (*f)->flush();
    // The file spool's locator is the message file itself, held or not.
    const mailq::MessageRecord m = sample_record(8);
    const std::string where = (*f)->locator(m, 0);
    CHECK(where.rfind("queue/", 0) == 0);
    CHECK(fs::is_regular_file(dir / "files" + "/" + where));
    mailq::RecordChange hold;
    hold.id = m.id;
    hold.held = true;
    REQUIRE((*f)->update(hold));
    const std::string held = (*f)->locator(m, 0);
    CHECK(held == where + ".HELD");
    CHECK(fs::is_regular_file(dir / "files" + "/" + held));
  }
  CHECK(choose_layout(dir / "files", std::nullopt) == Layout::files);
  CHECK(choose_layout(dir / "files", Layout::segments) == Layout::segments);  // then refused

  auto s = open_spool(dir / "new", clock, choose_layout(dir / "new", std::nullopt));
  REQUIRE(s);
  insert_ok(**s, clock, sample_record(9), "nine\r\n");
  (*s)->flush();
  const mailq::MessageRecord m = sample_record(9);
  const std::string name = mailq::queue_file_name(m.id, 0);
  CHECK((*s)->locator(m, 0) == "segments/0000000000000001.seg#" + name);
  CHECK(fs::is_regular_file(dir / "new/segments/0000000000000001.seg"));
  // The attempt letter counts the attempts before, as in the file spool's names.
  CHECK((*s)->locator(m, 2) == "segments/0000000000000001.seg#" + mailq::queue_file_name(m.id, 2));
  CHECK(mailq::queue_file_name(m.id, 2).rfind("ZX", 0) == 0);
  // Not stored (an event after its removal): no segment named.
  REQUIRE((*s)->remove(m.id));
  CHECK((*s)->locator(m, 1) == "segments#" + mailq::queue_file_name(m.id, 1));
}

TEST_CASE("open_spool opens the layout asked for and refuses a directory of the other one",
          "[spool][layout]") {
  TempDir dir;
  ManualClock clock;
  {
    auto s = open_spool(dir / "seg", clock, Layout::segments);
    REQUIRE(s);
    CHECK(dynamic_cast<mailq::spool::SegmentStorage*>(s->get()) != nullptr);
    insert_ok(**s, clock, sample_record(7), "seven\r\n");
    (*s)->flush();
    CHECK((*s)->size() == 1);
    CHECK((*s)->directory() == dir / "seg");
  }
  auto wrong = open_spool(dir / "seg", clock, Layout::files);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code == mailq::errc::storage_failure);
  CHECK(wrong.error().message == "spool " + dir / "seg" + " holds a segment spool (" + dir / "seg" +
                                     "/segments); open it with layout = segments");
  CHECK_FALSE(fs::exists(dir / "seg/queue"));  // nothing created by the refused open

  // The messages are still there for the right layout.
  auto again = open_spool(dir / "seg", clock, Layout::segments);
  REQUIRE(again);
  Loaded l = load_all(**again);
  CHECK(l.report.recovered == 1);
  CHECK((*again)->read_body(MessageId{7}).value() == "seven\r\n");
  again->reset();

  {
    auto f = open_spool(dir / "files", clock, Layout::files);
    REQUIRE(f);
    CHECK(dynamic_cast<mailq::spool::SpoolStorage*>(f->get()) != nullptr);
    insert_ok(**f, clock, sample_record(8), "eight\r\n");
    (*f)->flush();
  }
  auto refused = open_spool(dir / "files", clock, Layout::segments);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message == "spool " + dir / "files" + " holds a file spool (" +
                                       dir / "files" + "/queue); open it with layout = files");
}

TEST_CASE(
    "a spool that holds messages refuses an insert before its load, saying why, and takes it "
    "after",
    "[spool][layout]") {
  for (Layout layout : {Layout::files, Layout::segments}) {
    INFO(mailq::spool::to_string(layout));
    TempDir dir;
    ManualClock clock;
    {
      auto s = open_spool(dir / "spool", clock, layout);
      REQUIRE(s);
      insert_ok(**s, clock, sample_record(1), "one\r\n");  // empty at open: no load needed
      (*s)->flush();
    }
    auto s = open_spool(dir / "spool", clock, layout);
    REQUIRE(s);
    bool called = false;
    (*s)->insert(sample_record(2), "two\r\n", [&](mailq::Result<void> r) {
      called = true;
      REQUIRE_FALSE(r);
      CHECK(r.code() == mailq::errc::bad_state);
      CHECK(r.error().message.find("holds messages and was not loaded yet (Queue::recover "
                                   "first)") != std::string::npos);
    });
    clock.run_pending();
    CHECK(called);
    std::size_t loaded = 0;
    REQUIRE((*s)->load([&](mailq::MessageRecord&&) { ++loaded; }, nullptr));
    CHECK(loaded == 1);  // the refused insert left nothing
    insert_ok(**s, clock, sample_record(2), "two\r\n");
    CHECK((*s)->size() == 2);
  }
}
