# fanotify watcher: reports host-side changes (filesystem marks, FID records) to versiond.
add_library(svfs_fanotify STATIC ${CMAKE_CURRENT_LIST_DIR}/fanotify_watcher.cc)
target_include_directories(svfs_fanotify PUBLIC ${SVFS_INCLUDE_ROOTS}/versiond)
target_link_libraries(svfs_fanotify PUBLIC spdlog::spdlog fmt::fmt)
