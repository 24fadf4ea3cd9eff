/* SPDX-License-Identifier: MIT */
/* qsnap compact: shorten the drives' layer chains and the RAM chains of
 * differential snapshots. */
#include <stdio.h>

#include "cli.h"

static int max_chain;
static const char *fold;

static const struct cli_opt opts[] = {
	{"max-chain", 0, CLI_NUMBER, "N", "the limit for this run (default: the VM's)", .target = &max_chain,
	 .min = 2},
	{"fold", 0, CLI_STRING, "SNAPSHOT", "only fold this differential snapshot's chain into a RAM file of its own",
	 .target = &fold},
	{0},
};

static int run(struct cli *c)
{
	qsnap_compact_stats stats = QSNAP_COMPACT_STATS_INIT;

	if (fold) {
		if (qsnap_vm_fold(c->vm, fold, &c->err) < 0)
			return CLI_FAILED;
		printf("folded the RAM chain of %s into a RAM file of its own\n", fold);
		return 0;
	}
	if (qsnap_vm_compact(c->vm, (unsigned)max_chain, &stats, &c->err) < 0)
		return CLI_FAILED;
	printf("compacted %s: %u layers merged, %u chains flattened, longest chain now %zu; %u RAM chains folded\n",
	       c->argv[0], stats.merged, stats.flattened, stats.longest, stats.folded);
	return 0;
}

const struct cli_cmd cli_cmd_compact = {
	.name = "compact",
	.summary = "shorten the drives' layer chains and long RAM chains",
	.args = "VMDIR",
	.min_args = 1,
	.max_args = 1,
	.about = "Shorten the drives' layer chains without changing what any snapshot\n"
		 "restores to: layers that no snapshot and no live disk needs are merged into\n"
		 "the layer above, and a live chain longer than N (base image included) is\n"
		 "flattened onto its base. Works with the VM running or stopped. Saves do this\n"
		 "by themselves past the limit set with qsnap config --max-chain (default " CLI_XSTR(QSNAP_DEFAULT_MAX_CHAIN) ").\n"
		 "A differential snapshot whose restore loads " CLI_XSTR(QSNAP_FOLD_AT) " or more older deltas first gets\n"
		 "them folded into a RAM file of its own (a copy of the RAM file it builds on\n"
		 "with the deltas written in: as much disk as the guest's RAM in use), so that\n"
		 "its restore loads only its own delta; --fold does that for one snapshot.\n",
	.opts = opts,
	.common = CLI_LOCK_TIMEOUT,
	.vm = CLI_VM_LOCKED,
	.run = run,
};
