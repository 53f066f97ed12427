/*
 * Fault-injection seams. Code marks a point that can fail with
 * EC_FAULT("module.operation"); in production builds the macro is the constant
 * false and costs nothing. Test builds (-DEC_FAULT_INJECTION) let a test arm a
 * point so that its Nth hit reports failure, to prove that every failure path
 * loses nothing and leaks nothing.
 */
#ifndef EDGECAP_FAULT_H
#define EDGECAP_FAULT_H

#include <stdbool.h>

#ifdef EC_FAULT_INJECTION
/* Arms `point`: counting from now, the hit after `skip` successful hits
 * fails, then `count`-1 more hits fail (count 0 = every later hit). Re-arming
 * replaces. Point names are 1..63 characters and at most 64 distinct points
 * exist; anything else is a test bug and aborts rather than never firing. */
void ec_fault_arm(const char *point, unsigned skip, unsigned count);
/* Disarms every point and clears the hit counters. */
void ec_fault_reset(void);
/* Reports whether this hit of `point` must fail. */
bool ec_fault_hit(const char *point);
/* How many times `point` was reached since the last reset (arming does not
 * clear it). */
unsigned ec_fault_hits(const char *point);
#define EC_FAULT(point) ec_fault_hit(point)
#else
#define EC_FAULT(point) false
#endif

#endif
