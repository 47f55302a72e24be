namespace SensMerging.Core.Models;

/// <summary>
/// Exclusive right to write one output folder for the life of a merge: the file <c>&lt;out&gt;.lock</c> beside the folder,
/// held open with an exclusive lock (<c>flock</c> on Linux). A second merge into the same folder fails at once with
/// <see cref="OutputFolderBusyException"/> instead of racing the first. The operating system drops the lock when the
/// process ends, however it ends, so a killed merge never leaves the folder locked; disposing removes the file.
/// </summary>
public sealed class OutputFolderLock : IDisposable
{
    /// <summary>Appended to the output folder's path to name the lock file.</summary>
    public const string Suffix = ".lock";

    // errno EWOULDBLOCK (Linux), the HResult .NET gives the IOException when another handle holds the lock; and
    // ERROR_SHARING_VIOLATION as an HResult (Windows).
    private const int LockHeldUnix = 11;
    private const int SharingViolationWindows = unchecked((int)0x80070020);

    private readonly FileStream _stream;
    private bool _disposed;

    private OutputFolderLock(string outputPath, string lockPath, FileStream stream)
    {
        OutputPath = outputPath;
        LockPath = lockPath;
        _stream = stream;
    }

    /// <summary>The locked output folder (full path).</summary>
    public string OutputPath { get; }

    /// <summary>The lock file, <c>&lt;out&gt;.lock</c>.</summary>
    public string LockPath { get; }

    /// <summary>The lock file's path for <paramref name="outputPath"/>.</summary>
    public static string LockPathFor(string outputPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputPath);
        return Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputPath)) + Suffix;
    }

    /// <summary>Takes the lock on <paramref name="outputPath"/> (creating its parent folder when missing), or throws at once.</summary>
    /// <exception cref="OutputFolderBusyException">Another process (or another merge in this one) holds it.</exception>
    public static OutputFolderLock Acquire(string outputPath)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputPath));
        var lockPath = LockPathFor(full);
        var parent = Path.GetDirectoryName(full) ?? throw new ModelFolderException($"output path '{full}' has no parent folder");
        Directory.CreateDirectory(parent);
        for (var attempt = 0; ; attempt++)
        {
            FileStream stream;
            try
            {
                stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, bufferSize: 1);
            }
            catch (IOException ex) when (ex.GetType() == typeof(IOException) && ex.HResult is LockHeldUnix or SharingViolationWindows)
            {
                throw new OutputFolderBusyException(
                    $"output folder '{full}' is being written by another merge (it holds '{lockPath}'); wait for that merge to end or choose another output folder", ex);
            }
            if (StillNamed(stream, lockPath) || attempt >= 3)
            {
                return new OutputFolderLock(full, lockPath, stream);
            }
            // The previous holder removed the file between our open and our lock: ours is an unlinked file that
            // nobody else can see. Take the file that is there now instead.
            stream.Dispose();
        }
    }

    /// <summary>Removes the lock file and releases the lock (in that order, so nobody locks a file about to vanish).</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        try
        {
            File.Delete(LockPath);
        }
        catch (IOException)
        {
            // Left behind: harmless, the next merge opens and locks it again.
        }
        catch (UnauthorizedAccessException)
        {
            // As above.
        }
        _stream.Dispose();
    }

    /// <summary>
    /// False when the file <paramref name="stream"/> has open was removed from <paramref name="path"/> meanwhile. Linux
    /// tells through <c>/proc/self/fd</c> (an unlinked file's link reads "... (deleted)"); elsewhere it is assumed named.
    /// </summary>
    private static bool StillNamed(FileStream stream, string path)
    {
        var target = new FileInfo($"/proc/self/fd/{stream.SafeFileHandle.DangerousGetHandle()}").LinkTarget;
        return target is null || !(target.EndsWith(" (deleted)", StringComparison.Ordinal) && !string.Equals(target, path, StringComparison.Ordinal));
    }
}

/// <summary>Another merge is writing the same output folder (it holds <see cref="OutputFolderLock"/>).</summary>
public sealed class OutputFolderBusyException : IOException
{
    public OutputFolderBusyException()
    {
    }

    public OutputFolderBusyException(string message)
        : base(message)
    {
    }

    public OutputFolderBusyException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
