/* A qemu-user TCG plugin: how many times each guest instruction executed.
 *
 *     cc -shared -fPIC -O2 -o qemu_insn_count.so benches/analysis/qemu_insn_count.c
 *     qemu-aarch64 -plugin ./qemu_insn_count.so,out=counts.txt PROGRAM...
 *
 * At exit it writes one line per executed instruction address, "vaddr count disassembly",
 * counts summed over retranslations.  benches/analysis/arm_count.py builds and runs it and
 * reads the file.  The counters are plain inline adds (cheap, not atomic): run the guest
 * single-threaded (OMP_NUM_THREADS=1) for exact counts.
 *
 * Debian's qemu-user has plugin support but ships no plugins and no qemu-plugin.h, so the
 * few declarations used are written out here: this part of the API (version 1) has been
 * the same from qemu 4.2 to 8.x.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

typedef struct {
    uint64_t vaddr;
    uint64_t count;
    char *disas;
} Record;

/* Records live in chunks that never move: their counters' addresses are baked into the
 * translated code. */
#define CHUNK 65536
typedef struct Chunk {
    struct Chunk *next;
    size_t used;
    Record records[CHUNK];
} Chunk;

static Chunk *chunks;
static char out_path[4096] = "qemu_insn_count.txt";

static Record *new_record(void) {
    if (!chunks || chunks->used == CHUNK) {
        Chunk *c = calloc(1, sizeof(Chunk));
        if (!c) {
            abort();
        }
        c->next = chunks;
        chunks = c;
    }
    return &chunks->records[chunks->used++];
}

static void on_translation(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        Record *r = new_record();
        r->vaddr = qemu_plugin_insn_vaddr(insn);
        r->disas = qemu_plugin_insn_disas(insn);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &r->count, 1);
    }
}

static int by_vaddr(const void *a, const void *b) {
    const Record *x = *(Record *const *)a, *y = *(Record *const *)b;
    return (x->vaddr > y->vaddr) - (x->vaddr < y->vaddr);
}

static void on_exit_(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    size_t n = 0;
    for (Chunk *c = chunks; c; c = c->next) {
        n += c->used;
    }
    Record **all = malloc((n ? n : 1) * sizeof(Record *));
    size_t k = 0;
    for (Chunk *c = chunks; c; c = c->next) {
        for (size_t i = 0; i < c->used; i++) {
            all[k++] = &c->records[i];
        }
    }
    qsort(all, n, sizeof(Record *), by_vaddr);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.part", out_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        perror(tmp);
        return;
    }
    for (size_t i = 0; i < n;) {
        size_t j = i;
        uint64_t count = 0;
        while (j < n && all[j]->vaddr == all[i]->vaddr) {
            count += all[j++]->count;
        }
        if (count) {
            fprintf(f, "%llx %llu %s\n", (unsigned long long)all[i]->vaddr, (unsigned long long)count,
                    all[i]->disas ? all[i]->disas : "?");
        }
        i = j;
    }
    if (fclose(f) == 0) {
        rename(tmp, out_path);
    }
    free(all);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else {
            fprintf(stderr, "qemu_insn_count: unknown argument %s (expected out=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translation);
    qemu_plugin_register_atexit_cb(id, on_exit_, NULL);
    return 0;
}
