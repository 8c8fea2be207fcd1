// The process reader (ProcFS, ProcessFacts) and executable facts live in the
// introspection library; FerretCore's users get them with FerretCore.
@_exported import GoIntrospection
