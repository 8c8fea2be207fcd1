// The procfs layer (ProcFile, ProcessReadError, ProcessTasks, ProcText, PID
// namespaces, HostProc) lives in LinuxProcess; GoIntrospection's users see it too.
@_exported import LinuxProcess
