using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;

namespace SensMerging.Hub.Client;

/// <summary>A blob in the cache: its SHA-256 when known (a sha256 etag, or hashed on the way), else null.</summary>
internal sealed record BlobResult(string? Sha256);

/// <summary>
/// Gets one blob into the cache: under its lock file, through a resumable <c>.incomplete</c> file, hashed while it
/// streams and verified against its etag (sha256, or git's sha1 of the blob) and size before it is moved into place;
/// a blob already there is verified (or trusted through its verification stamp).
/// </summary>
internal sealed partial class BlobDownloader(HubClient client, HubOptions options, HubCacheLayout layout, ILogger logger)
{
    private readonly HubClient _client = client;
    private readonly HubOptions _options = options;
    private readonly HubCacheLayout _layout = layout;
    private readonly ILogger _logger = logger;

    /// <summary>
    /// The blob of <paramref name="path"/> in the cache: kept when present and verified (or trusted by size when
    /// verification of existing blobs is off), else downloaded under its lock file.
    /// </summary>
    public async Task<BlobResult> EnsureAsync(
        HubRepoId repo, string commit, string path, string etag, long size, PullProgress state, CancellationToken cancellationToken)
    {
        var blobsDir = _layout.BlobsDirectory(repo);
        var blob = _layout.BlobPath(repo, etag);
        var lockPath = Path.Combine(_layout.LocksDirectory(repo), etag + ".lock");
        try
        {
            Directory.CreateDirectory(blobsDir);
            await using var fileLock = await AcquireLockAsync(repo, path, lockPath, cancellationToken);
            if (File.Exists(blob))
            {
                var length = new FileInfo(blob).Length;
                if (!_options.VerifyExistingBlobs && length == size)
                {
                    state.Cached(path, size);
                    return new BlobResult(HubHashing.IsSha256Hex(etag) ? etag.ToLowerInvariant() : null);
                }

                var check = await VerifyCachedBlobAsync(repo, blob, etag, size, cancellationToken);
                if (check.Ok)
                {
                    state.Cached(path, size);
                    return new BlobResult(check.Sha256);
                }

                LogCorruptBlob(_logger, repo.Id, path, etag);
                File.Delete(blob);
            }

            return await DownloadBlobAsync(repo, commit, path, etag, size, blob, state, cancellationToken);
        }
        catch (IOException ex) when (IsDiskFull(ex))
        {
            throw new HubDiskFullException(repo.Id, path, blobsDir, ex);
        }
    }

    private async Task<BlobResult> DownloadBlobAsync(
        HubRepoId repo, string commit, string path, string etag, long size, string blob, PullProgress state, CancellationToken cancellationToken)
    {
        var incomplete = blob + ".incomplete";
        bool sha256Etag = HubHashing.IsSha256Hex(etag);
        bool sha1Etag = HubHashing.IsSha1Hex(etag);
        if (!sha256Etag && !sha1Etag)
        {
            LogUnverifiableEtag(_logger, repo.Id, path, etag);
        }

        int bufferSize = Math.Max(64 * 1024, _options.DownloadBufferSize);
        using var sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var gitSha1 = sha1Etag ? IncrementalHash.CreateHash(HashAlgorithmName.SHA1) : null;
        long written;
        long received = 0;
        using (var handle = File.OpenHandle(incomplete, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, FileOptions.Asynchronous))
        {
            written = RandomAccess.GetLength(handle);
            if (written > size)
            {
                RandomAccess.SetLength(handle, 0);
                written = 0;
            }

            gitSha1?.AppendData(HubHashing.GitBlobHeader(size));
            if (written > 0)
            {
                // Resume: hash what is already there once, then fetch only the rest.
                var bufferA = ArrayPool<byte>.Shared.Rent(bufferSize);
                long offset = 0;
                try
                {
                    while (offset < written)
                    {
                        int n = await RandomAccess.ReadAsync(handle, bufferA.AsMemory(0, (int)Math.Min(bufferSize, written - offset)), offset, cancellationToken);
                        if (n == 0)
                        {
                            break;
                        }

                        sha256.AppendData(bufferA, 0, n);
                        gitSha1?.AppendData(bufferA, 0, n);
                        offset += n;
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(bufferA);
                }

                written = offset;
                LogResume(_logger, repo.Id, path, written, size);
            }

            state.Started(path, written, size);
            int interruptions = 0;
            bool first = true;
            while (written < size || (size == 0 && first))
            {
                first = false;
                long before = written;
                try
                {
                    (written, received) = await StreamIntoAsync(repo, commit, path, size, handle, written, received, sha256, gitSha1, bufferSize, state, cancellationToken);
                    break;
                }
                catch (DownloadInterruptedException ex) when (interruptions < _options.MaxRetryAttempts)
                {
                    interruptions++;
                    written = ex.Written;
                    received += Math.Max(0, ex.Written - before);
                    LogInterrupted(_logger, repo.Id, path, written, size, interruptions, ex.InnerException!.Message);
                    await Task.Delay(_options.RetryBaseDelay * (1 << Math.Min(interruptions - 1, 6)), cancellationToken);
                }
                catch (DownloadInterruptedException ex) when (ex.InnerException is TimeoutException)
                {
                    throw new HubTimeoutException(repo.Id, commit, path, _options.DownloadTimeout, HubOptions.DownloadTimeoutVariable, interruptions + 1,
                        string.Create(CultureInfo.InvariantCulture,
                            $"no data for {HubTimeoutException.Format(_options.DownloadTimeout)} after {ex.Written} of {size} bytes; the partial file is kept and the next pull resumes it"),
                        ex.InnerException);
                }
                catch (DownloadInterruptedException ex)
                {
                    throw new HubException(
                        $"The download of '{path}' of '{repo.Id}' was interrupted after {ex.Written} of {size} bytes ({ex.InnerException!.Message}); the partial file is kept and the next pull resumes it.",
                        repo.Id, commit, path, ex.InnerException);
                }
            }
        }

        var actualSha256 = HubHashing.ToHex(sha256.GetHashAndReset());
        var actualEtagHash = sha1Etag ? HubHashing.ToHex(gitSha1!.GetHashAndReset()) : actualSha256;
        if (written != size)
        {
            File.Delete(incomplete);
            throw new HubSizeMismatchException(repo.Id, commit, path, size, written);
        }

        bool verifiable = sha256Etag || sha1Etag;
        if (verifiable && !string.Equals(actualEtagHash, etag, StringComparison.OrdinalIgnoreCase))
        {
            File.Delete(incomplete);
            throw new HubChecksumMismatchException(repo.Id, commit, path, etag, actualEtagHash, size, written);
        }

        File.Move(incomplete, blob, overwrite: true);

        // Verified just now: stamp it so later pulls need not hash it again. The blob's mtime is moved back by more
        // than the racy window first, so that any later write (which sets mtime to "now") is seen as a change. A blob
        // whose etag is not a hash was checked for size only: it is never stamped verified.
        if (verifiable)
        {
            File.SetLastWriteTimeUtc(blob, File.GetLastWriteTimeUtc(blob) - BlobVerificationStamp.RacyWindow - TimeSpan.FromSeconds(1));
            BlobVerificationStamp.Write(blob, BlobVerificationStamp.PathFor(_layout.LocksDirectory(repo), etag), actualSha256);
        }

        state.Completed(path, size, received);
        return new BlobResult(actualSha256);
    }

    private async Task<(long Written, long Received)> StreamIntoAsync(
        HubRepoId repo, string commit, string path, long size, SafeFileHandle handle, long written, long received,
        IncrementalHash sha256, IncrementalHash? gitSha1, int bufferSize, PullProgress state, CancellationToken cancellationToken)
    {
        await using var response = await _client.OpenFileAsync(repo.Id, commit, path, written, cancellationToken);
        if (response.StartOffset != written)
        {
            if (response.StartOffset != 0)
            {
                throw new HubException($"The Hub answered a range request for '{path}' of '{repo.Id}' from byte {response.StartOffset} instead of {written}.", repo.Id, commit, path);
            }

            // The server ignored the Range header: start over.
            RandomAccess.SetLength(handle, 0);
            written = 0;
            sha256.GetHashAndReset();
            if (gitSha1 is not null)
            {
                gitSha1.GetHashAndReset();
                gitSha1.AppendData(HubHashing.GitBlobHeader(size));
            }
        }

        long fileBytes = written;
        var (copied, readError) = await HashingFileCopier.CopyAsync(
            response.Content, handle, written, size - written, bufferSize, _options.DownloadTimeout, sha256, gitSha1,
            n =>
            {
                fileBytes += n;
                state.Progress(path, fileBytes, size, n);
            },
            cancellationToken);
        written += copied;
        if (readError is not null)
        {
            throw new DownloadInterruptedException(written, readError);
        }

        return (written, received + copied);
    }

    /// <summary>
    /// Checks a blob already in the cache against its etag and size: trusted without reading it when its verification
    /// stamp says it is unchanged since it was last hashed, otherwise hashed (and stamped when it matches).
    /// </summary>
    public async Task<(bool Ok, string Sha256)> VerifyCachedBlobAsync(
        HubRepoId repo, string blob, string etag, long expectedSize, CancellationToken cancellationToken)
    {
        var stamp = BlobVerificationStamp.PathFor(_layout.LocksDirectory(repo), etag);
        bool sha1Etag = HubHashing.IsSha1Hex(etag);
        bool verifiable = sha1Etag || HubHashing.IsSha256Hex(etag);
        if (verifiable && BlobVerificationStamp.TryTrust(blob, stamp, expectedSize) is { } trusted)
        {
            return (true, trusted);
        }

        var (sha256, gitSha1, length) = await HubHashing.HashFileAsync(blob, sha1Etag, Math.Max(64 * 1024, _options.DownloadBufferSize), cancellationToken);
        bool ok = length == expectedSize && (sha1Etag
            ? string.Equals(gitSha1, etag, StringComparison.OrdinalIgnoreCase)
            : !HubHashing.IsSha256Hex(etag) || string.Equals(sha256, etag, StringComparison.OrdinalIgnoreCase));
        LogBlobHashed(_logger, repo.Id, etag, ok);
        if (ok && verifiable)
        {
            BlobVerificationStamp.Write(blob, stamp, sha256);
        }

        return (ok, sha256);
    }


    private async Task<FileStream> AcquireLockAsync(HubRepoId repo, string path, string lockPath, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);
        var deadline = Stopwatch.StartNew();
        bool logged = false;
        while (true)
        {
            try
            {
                return new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
            }
            catch (IOException ex) when (!IsDiskFull(ex))
            {
                if (deadline.Elapsed >= _options.LockTimeout)
                {
                    throw new HubException(
                        $"Timed out after {_options.LockTimeout} waiting for the lock file '{lockPath}' (another download of '{path}' of '{repo.Id}' holds it).",
                        repo.Id, null, path, ex);
                }

                if (!logged)
                {
                    LogWaitingForLock(_logger, lockPath);
                    logged = true;
                }

                await Task.Delay(100, cancellationToken);
            }
        }
    }

    internal static bool IsDiskFull(IOException ex)
    {
        const int Enospc = 28;
        const int ErrorHandleDiskFull = 39;
        const int ErrorDiskFull = 112;
        int code = ex.HResult & 0xFFFF;
        return ex.HResult == Enospc || (unchecked((uint)ex.HResult & 0xFFFF0000) == 0x80070000 && code is ErrorHandleDiskFull or ErrorDiskFull)
            || ex.Message.Contains("No space left on device", StringComparison.OrdinalIgnoreCase);
    }



    /// <summary>The response body failed or stalled mid-stream; <see cref="Written"/> bytes are on disk and hashed.</summary>
    private sealed class DownloadInterruptedException(long written, Exception inner) : Exception("Download interrupted.", inner)
    {
        public long Written { get; } = written;
    }

    [LoggerMessage(EventId = 5204, Level = LogLevel.Warning, Message = "{RepoId}: cached blob {Etag} of '{Path}' failed verification; it will not be used")]
    internal static partial void LogCorruptBlob(ILogger logger, string repoId, string path, string etag);

    [LoggerMessage(EventId = 5205, Level = LogLevel.Debug, Message = "{RepoId}: hashed cached blob {Etag} (matches: {Ok})")]
    private static partial void LogBlobHashed(ILogger logger, string repoId, string etag, bool ok);

    [LoggerMessage(EventId = 5206, Level = LogLevel.Information, Message = "{RepoId}: resuming '{Path}' at byte {Offset} of {Size}")]
    private static partial void LogResume(ILogger logger, string repoId, string path, long offset, long size);

    [LoggerMessage(EventId = 5207, Level = LogLevel.Warning, Message = "{RepoId}: etag '{Etag}' of '{Path}' is neither sha256 nor sha1; only the size can be checked")]
    private static partial void LogUnverifiableEtag(ILogger logger, string repoId, string path, string etag);

    [LoggerMessage(EventId = 5209, Level = LogLevel.Information, Message = "Waiting for lock {LockPath}")]
    private static partial void LogWaitingForLock(ILogger logger, string lockPath);

    [LoggerMessage(EventId = 5210, Level = LogLevel.Warning, Message = "{RepoId}: download of '{Path}' interrupted at byte {Offset} of {Size} (attempt {Attempt}): {Error}; resuming")]
    private static partial void LogInterrupted(ILogger logger, string repoId, string path, long offset, long size, int attempt, string error);
}
