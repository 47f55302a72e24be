using System.Globalization;

namespace SensMerging.Hub.Client;

/// <summary>
/// Remembers that a cached blob was hashed and matched its etag, so later pulls need not read it again:
/// {cache}/.locks/{repo folder}/{etag}.verified holds "v1 {size} {blob mtime ticks} {stamp time ticks} {sha256}".
/// The official clients ignore .locks (they only lock files there; the stamp sits beside the lock file, not in it).
/// A stamp is trusted only when the blob still has the recorded size and modification time and that time was at least
/// <see cref="RacyWindow"/> older than the stamp; otherwise a write in the same clock tick as the stamped state could
/// go unseen (git's "racy clean" problem), so such blobs are hashed again and re-stamped.
/// </summary>
internal static class BlobVerificationStamp
{
    /// <summary>How much older than its stamp a blob's mtime must be for the stamp to be trusted.</summary>
    internal static readonly TimeSpan RacyWindow = TimeSpan.FromSeconds(2);

    private const string Version = "v1";

    /// <summary>The stamp file of a blob.</summary>
    public static string PathFor(string locksRepoDirectory, string etag) => Path.Combine(locksRepoDirectory, etag + ".verified");

    /// <summary>The sha256 recorded when the blob was last verified, when the blob is unchanged since; null otherwise.</summary>
    public static string? TryTrust(string blob, string stampPath, long expectedSize)
    {
        string text;
        try
        {
            text = File.ReadAllText(stampPath);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        var parts = text.Split(' ');
        if (parts.Length != 5 || parts[0] != Version
            || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var size)
            || !long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var mtime)
            || !long.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out var stamped)
            || !HubHashing.IsSha256Hex(parts[4]))
        {
            return null;
        }

        var info = new FileInfo(blob);
        bool unchanged = info.Exists && size == expectedSize && info.Length == size && info.LastWriteTimeUtc.Ticks == mtime;
        return unchanged && stamped - mtime >= RacyWindow.Ticks ? parts[4].ToLowerInvariant() : null;
    }

    /// <summary>Records that <paramref name="blob"/> (as it is now) matched its etag and has this sha256. Best effort.</summary>
    public static void Write(string blob, string stampPath, string sha256)
    {
        var info = new FileInfo(blob);
        if (!info.Exists)
        {
            return;
        }

        var text = string.Create(CultureInfo.InvariantCulture,
            $"{Version} {info.Length} {info.LastWriteTimeUtc.Ticks} {DateTime.UtcNow.Ticks} {sha256}");
        var temp = stampPath + "." + Guid.NewGuid().ToString("N") + ".tmp";
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(stampPath)!);
            File.WriteAllText(temp, text);
            File.Move(temp, stampPath, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            // Without a stamp the next pull hashes the blob again; nothing else depends on it.
            try
            {
                File.Delete(temp);
            }
            catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException)
            {
                // Left behind in .locks, which nothing scans.
            }
        }
    }
}
