// GoIntrospection is the top of the layers (LinuxProcess, ELFSymbols,
// GoBinaryFormat, then the running process and its Go runtime here): its users
// see them all through one import.
@_exported import ELFSymbols
@_exported import GoBinaryFormat
@_exported import LinuxProcess
