/*
 * no_entry.c — test fixture: a valid shared library that does NOT export
 * ferret_plugin_entry. dlopen succeeds; the host's dlsym of the entry symbol
 * must fail and be reported cleanly.
 *
 *   cc -shared -fPIC -I Sources/FerretPluginABI/include -o libno_entry.so no_entry.c
 */
int not_the_entry(void);

int not_the_entry(void) { return 42; }
