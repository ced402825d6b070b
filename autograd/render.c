/* render.c — DOT text to SVG or PNG in-process through Graphviz (libgvc + libcgraph):
 * agmemread parses, gvLayout runs the `dot` engine, gvRenderData writes the picture to memory.
 * Built always; without Graphviz (TG_HAVE_GRAPHVIZ 0) every call reports that clearly. */
#include <stdlib.h>
#include <string.h>

#include "tg_config.h"
#include "tapegrad_dot.h"

#if TG_HAVE_GRAPHVIZ
#include <graphviz/cgraph.h>
#include <graphviz/gvc.h>
#endif

static int known_format(const char *format)
{
    return format && (strcmp(format, "svg") == 0 || strcmp(format, "png") == 0);
}

#if TG_HAVE_GRAPHVIZ

/* Graphviz reports through a process-wide hook; keep its first error (else its first message)
 * for our one-line error instead of letting it print to stderr. */
static char gv_error[200], gv_message[200];

static void keep_line(char *dst, size_t cap, const char *msg)
{
    size_t n = strcspn(msg, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(dst, msg, n);
    dst[n] = '\0';
}

static int gv_capture(char *msg)
{
    if (!msg) return 0;
    if (!gv_error[0] && strncmp(msg, "Error", 5) == 0) keep_line(gv_error, sizeof gv_error, msg);
    if (!gv_message[0]) keep_line(gv_message, sizeof gv_message, msg);
    return 0;
}

static const char *gv_why(void)
{
    return gv_error[0] ? gv_error : gv_message[0] ? gv_message : "no message from Graphviz";
}

int tg_dot_can_render(void) { return 1; }

/* One Graphviz context for the whole process, made on first use and never freed. Graphviz 2.43
 * caches font names across contexts (its pango plugin keeps a pointer into the font table of
 * the context that last measured text), so freeing a context and making another one reads
 * freed memory on the next render; a single context is also what Graphviz expects. */
static GVC_t *gv_context(void)
{
    static GVC_t *gvc;
    if (!gvc) gvc = gvContext();
    return gvc;
}

enum tg_status tg_dot_render(const char *dot, size_t len, const char *format, char **out,
                             size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!dot) return tg_error(TG_ERR_VALUE, "tg_dot_render: no DOT text given");
    if (!known_format(format))
        return tg_error(TG_ERR_VALUE, "tg_dot_render: unknown format '%s' (expected svg or png)",
                        format ? format : "(null)");
    char *text = malloc(len + 1); /* agmemread wants a NUL-terminated string */
    if (!text) return tg_error(TG_ERR_NOMEM, "tg_dot_render: out of memory");
    memcpy(text, dot, len);
    text[len] = '\0';

    gv_error[0] = gv_message[0] = '\0';
    agusererrf prev_fn = agseterrf(gv_capture);
    agerrlevel_t prev_level = agseterr(AGWARN);
    enum tg_status st = TG_OK;
    GVC_t *gvc = gv_context();
    Agraph_t *g = NULL;
    int laid_out = 0;
    char *data = NULL;
    unsigned int n = 0;
    if (!gvc) {
        st = tg_error(TG_ERR_NOMEM, "tg_dot_render: Graphviz could not create a context");
        goto done;
    }
    g = agmemread(text);
    if (!g) {
        st = tg_error(TG_ERR_FORMAT, "tg_dot_render: Graphviz could not parse the DOT text: %s",
                      gv_why());
        goto done;
    }
    if (gvLayout(gvc, g, "dot") != 0) {
        st = tg_error(TG_ERR_FORMAT, "tg_dot_render: Graphviz layout 'dot' failed: %s", gv_why());
        goto done;
    }
    laid_out = 1;
    if (gvRenderData(gvc, g, format, &data, &n) != 0 || !data) {
        st = tg_error(TG_ERR_FORMAT, "tg_dot_render: Graphviz could not render %s: %s", format,
                      gv_why());
        goto done;
    }
    *out = malloc((size_t)n + 1);
    if (!*out) {
        st = tg_error(TG_ERR_NOMEM, "tg_dot_render: out of memory for %u bytes of %s", n, format);
        goto done;
    }
    memcpy(*out, data, n);
    (*out)[n] = '\0';
    *out_len = n;
done:
    if (data) gvFreeRenderData(data);
    if (laid_out) gvFreeLayout(gvc, g);
    if (g) agclose(g);
    agseterr(prev_level);
    agseterrf(prev_fn);
    free(text);
    return st;
}

#else

int tg_dot_can_render(void) { return 0; }

enum tg_status tg_dot_render(const char *dot, size_t len, const char *format, char **out,
                             size_t *out_len)
{
    (void)dot, (void)len;
    *out = NULL;
    *out_len = 0;
    if (!known_format(format))
        return tg_error(TG_ERR_VALUE, "tg_dot_render: unknown format '%s' (expected svg or png)",
                        format ? format : "(null)");
    return tg_error(TG_ERR_STATE, "tg_dot_render: this tapegrad was built without Graphviz "
                                  "(libgvc/libcgraph), so it cannot write %s; write .dot instead",
                    format);
}

#endif
