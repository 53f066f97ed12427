/* The daemon's own version; bumped by hand at release. */
#ifndef EDGECAP_VERSION_H
#define EDGECAP_VERSION_H

#define EC_VERSION "0.1.0"

#endif
