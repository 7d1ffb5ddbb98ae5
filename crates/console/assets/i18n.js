// The console's strings in zh-CN and en.
