using System.Runtime.InteropServices;
using System.Text;

namespace SensMerging.Hub.Server.Store;

/// <summary>
/// Crash-safe writes: a file is written under a temporary name in the same file system, flushed to disk (fsync),
/// renamed over its final name (atomic), and the folder holding it flushed, so after a crash the final name holds
/// either the old content or the whole new content, never part of it.
/// </summary>
internal static partial class DurableFiles
{
    private const int ReadOnly = 0;
    private const int Directory = 0x10000; // O_DIRECTORY on Linux

    /// <summary>Writes <paramref name="content"/> to <paramref name="path"/> through <paramref name="tempFolder"/>.</summary>
    public static async Task WriteAllBytesAsync(string path, ReadOnlyMemory<byte> content, string tempFolder, CancellationToken cancellationToken)
    {
        var temp = NewTempPath(tempFolder);
        try
        {
            await using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0, FileOptions.Asynchronous))
            {
                await stream.WriteAsync(content, cancellationToken);
                stream.Flush(flushToDisk: true);
            }

            MoveIntoPlace(temp, path, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>Writes UTF-8 text durably.</summary>
    public static Task WriteAllTextAsync(string path, string text, string tempFolder, CancellationToken cancellationToken) =>
        WriteAllBytesAsync(path, Encoding.UTF8.GetBytes(text), tempFolder, cancellationToken);

    /// <summary>A fresh unique path in <paramref name="tempFolder"/>.</summary>
    public static string NewTempPath(string tempFolder) => Path.Combine(tempFolder, Guid.NewGuid().ToString("N") + ".tmp");

    /// <summary>Renames a finished (already flushed) file or folder into place and flushes the target folder.</summary>
    public static void MoveIntoPlace(string source, string target, bool overwrite)
    {
        var folder = Path.GetDirectoryName(target)!;
        System.IO.Directory.CreateDirectory(folder);
        if (System.IO.Directory.Exists(source))
        {
            System.IO.Directory.Move(source, target); // fails when the target exists: rename(2) of a folder is atomic
        }
        else
        {
            File.Move(source, target, overwrite);
        }

        FlushFolder(folder);
    }

    /// <summary>fsync of a folder, so that a rename in it survives a crash (a no-op where folders cannot be opened).</summary>
    public static void FlushFolder(string folder)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return;
        }

        int fd = Open(folder, ReadOnly | (OperatingSystem.IsLinux() ? Directory : 0));
        if (fd < 0)
        {
            return;
        }

        try
        {
            _ = Fsync(fd);
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>Deletes a file or folder, ignoring one already gone.</summary>
    public static void TryDelete(string path)
    {
        try
        {
            if (System.IO.Directory.Exists(path))
            {
                System.IO.Directory.Delete(path, recursive: true);
            }
            else
            {
                File.Delete(path);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Left for the next start's clean-up of the temporary folder.
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
