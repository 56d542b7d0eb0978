# fanotify watcher tests: real fanotify marks on tmpfs and ext4 (root; skipped without CAP_SYS_ADMIN).
add_executable(svfs_fanotify_tests ${CMAKE_CURRENT_LIST_DIR}/fanotify_watcher_test.cc)
target_link_libraries(svfs_fanotify_tests PRIVATE svfs_fanotify GTest::gtest GTest::gtest_main)
gtest_discover_tests(svfs_fanotify_tests DISCOVERY_TIMEOUT 60 PROPERTIES LABELS integration)
