#pragma once
// Sub-commands of the `strata` CLI. Each takes argv starting at the sub-command's own arguments
// (argv[0] = the sub-command name), prints one clear line on bad input and returns the exit code.
// The library throws; these functions catch and never let an exception escape.

int strata_cmd_train(int argc, char** argv);
int strata_cmd_methods(int argc, char** argv);
int strata_cmd_subspaces(int argc, char** argv);
int strata_cmd_compare(int argc, char** argv);
int strata_cmd_eval(int argc, char** argv);
int strata_cmd_export(int argc, char** argv);
int strata_cmd_verify(int argc, char** argv);
