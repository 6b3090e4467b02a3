/*
 * pg_trickle's ProcessUtility hook (see db_hook.rs). Written in C so that an error raised by
 * the statement it passes on reaches the client exactly as PostgreSQL raised it: no Rust frame
 * sits between PostgreSQL and the statement to catch the error and raise a copy (which lost
 * CONTEXT, the cursor position and the SCHEMA/TABLE/CONSTRAINT NAME fields of every error in
 * DDL, DO and CALL, in every database). Only the few statements that need a database free of
 * other sessions call into Rust first (pgt_before_database_ddl, guarded there).
 */
#include "postgres.h"

#include "nodes/parsenodes.h"
#include "tcop/utility.h"

extern void pgt_before_database_ddl(PlannedStmt *pstmt);

static ProcessUtility_hook_type pgt_previous_hook = NULL;

static bool
pgt_is_database_ddl(PlannedStmt *pstmt)
{
	Node	   *node = pstmt ? pstmt->utilityStmt : NULL;

	if (node == NULL)
		return false;
	switch (nodeTag(node))
	{
		case T_DropdbStmt:
		case T_CreatedbStmt:
		case T_AlterDatabaseStmt:
			return true;
		case T_RenameStmt:
			return ((RenameStmt *) node)->renameType == OBJECT_DATABASE;
		default:
			return false;
	}
}

static void
pgt_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (pgt_is_database_ddl(pstmt))
		pgt_before_database_ddl(pstmt);
	if (pgt_previous_hook)
		pgt_previous_hook(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);
}

void
pgt_install_utility_hook(void)
{
	pgt_previous_hook = ProcessUtility_hook;
	ProcessUtility_hook = pgt_process_utility;
}
