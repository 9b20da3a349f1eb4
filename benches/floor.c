/* The file-system floor of an inspection's two snapshots, for verify (b).
 *
 * Any verifier that records an inspection as the reference does must, at the
 * least, open, read and SHA-256 every file of the working directory before
 * the command runs, and look at every file again afterwards. This program
 * does only that, as cheaply as C and the kernel allow, so that BENCHMARKS.md
 * can show how much of totogate's time is the kernel's and how far any
 * implementation could go on this machine:
 *
 *   pass 1: per regular file openat, fstat, read (128 KiB, until a short
 *           read), SHA-256 (OpenSSL's EVP, SHA-NI where the CPU has it), close
 *   pass 2: per regular file fstatat
 *
 * Files whose names contain ".link" are skipped, as the reference's default
 * exclude `*.link*` skips them (verify (b) leaves `check.link` there).
 *
 * Both passes walk the tree with one thread per core sharing a stack of
 * directories opened relative to their parent (as totogate's walk does). No
 * JSON, no link, no rules: what is left of totogate's time beyond this is
 * its own.
 *
 * Build: cc -O2 -pthread -o floor benches/floor.c -lcrypto  (libssl-dev)
 * Usage: floor [DIR]   prints files, bytes and both passes' wall time.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (128 * 1024)

static int pass;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int *stack;
static size_t depth, cap, busy;
static long files, bytes;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void push(int fd) {
  if (depth == cap) {
    cap = cap ? 2 * cap : 1024;
    stack = realloc(stack, cap * sizeof *stack);
    if (!stack) die("realloc");
  }
  stack[depth++] = fd;
}

static void hash_file(int dfd, const char *name, unsigned char *buf, EVP_MD_CTX *md) {
  int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(name);
  struct stat st;
  if (fstat(fd, &st)) die("fstat");
  if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL)) die("EVP_DigestInit_ex");
  long n, total = 0;
  while ((n = read(fd, buf, CHUNK)) > 0) {
    EVP_DigestUpdate(md, buf, n);
    total += n;
    if (n < CHUNK) break;
  }
  if (n < 0) die("read");
  unsigned char out[32];
  EVP_DigestFinal_ex(md, out, NULL);
  close(fd);
  __atomic_add_fetch(&bytes, total, __ATOMIC_RELAXED);
}

static void walk_dir(int dfd, unsigned char *buf, EVP_MD_CTX *md) {
  DIR *d = fdopendir(dfd);
  if (!d) die("fdopendir");
  struct dirent *e;
  long n = 0;
  while ((e = readdir(d))) {
    const char *s = e->d_name;
    if (s[0] == '.' && (!s[1] || (s[1] == '.' && !s[2]))) continue;
    if (e->d_type == DT_DIR) {
      int fd = openat(dirfd(d), s, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) die(s);
      pthread_mutex_lock(&mu);
      push(fd);
      pthread_cond_signal(&cv);
      pthread_mutex_unlock(&mu);
    } else if (e->d_type == DT_REG && !strstr(s, ".link")) {
      if (pass == 1) {
        hash_file(dirfd(d), s, buf, md);
      } else {
        struct stat st;
        if (fstatat(dirfd(d), s, &st, AT_SYMLINK_NOFOLLOW)) die(s);
      }
      n++;
    }
  }
  closedir(d);
  __atomic_add_fetch(&files, n, __ATOMIC_RELAXED);
}

static void *worker(void *unused) {
  (void)unused;
  unsigned char *buf = malloc(CHUNK);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (!buf || !md) die("malloc");
  for (;;) {
    pthread_mutex_lock(&mu);
    while (depth == 0 && busy > 0) pthread_cond_wait(&cv, &mu);
    if (depth == 0) {
      pthread_cond_broadcast(&cv);
      pthread_mutex_unlock(&mu);
      break;
    }
    int fd = stack[--depth];
    busy++;
    pthread_mutex_unlock(&mu);
    walk_dir(fd, buf, md);
    pthread_mutex_lock(&mu);
    busy--;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  EVP_MD_CTX_free(md);
  free(buf);
  return NULL;
}

static double run(const char *dir, int threads) {
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) die(dir);
  files = bytes = 0;
  push(fd);
  pthread_t t[256];
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, NULL);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  return (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int threads = cpus < 1 ? 1 : cpus > 256 ? 256 : (int)cpus;
  pass = 1;
  double hashed = run(dir, threads);
  long n = files, size = bytes;
  pass = 2;
  double statted = run(dir, threads);
  printf("floor: %d threads, %ld files, %.1f MB: read+SHA-256 %.1f ms, stat %.1f ms, total %.1f ms\n",
         threads, n, size / 1e6, hashed, statted, hashed + statted);
  return 0;
}
