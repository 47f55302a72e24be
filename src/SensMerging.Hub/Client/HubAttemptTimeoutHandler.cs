namespace SensMerging.Hub.Client;

/// <summary>What a request is for, which decides its timeout (set on the request's options by <see cref="HubClient"/>).</summary>
internal enum HubRequestKind
{
    /// <summary>Model info, tree page, paths-info, HEAD: <see cref="HubOptions.EtagTimeout"/> for the whole attempt, body included.</summary>
    Metadata,

    /// <summary>A file body: <see cref="HubOptions.DownloadTimeout"/> for the headers; the body is read by the caller.</summary>
    Download,
}

/// <summary>One attempt of a request ran past its timeout (retried as transient by the resilience pipeline).</summary>
internal sealed class HubAttemptTimeoutException(HubRequestKind kind, TimeSpan timeout, Exception innerException)
    : TimeoutException($"No answer within {HubTimeoutException.Format(timeout)} ({HubTimeoutException.SettingOf(kind)}).", innerException)
{
    public HubRequestKind Kind { get; } = kind;

    public TimeSpan Timeout { get; } = timeout;
}

/// <summary>
/// Bounds each attempt (it sits inside the retry strategy, so every retry gets the full time again): a metadata
/// request must deliver its headers and its whole body within <see cref="HubOptions.EtagTimeout"/> (the body is
/// buffered here, so a body that stalls is a failed attempt and is retried); a download must deliver its headers
/// within <see cref="HubOptions.DownloadTimeout"/> (the body's between-bytes timeout is the downloader's).
/// </summary>
internal sealed class HubAttemptTimeoutHandler(HubOptions options) : DelegatingHandler
{
    /// <summary>The request option naming the kind; requests without it are metadata requests.</summary>
    public static readonly HttpRequestOptionsKey<HubRequestKind> KindKey = new("SensMerging.Hub.RequestKind");

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var kind = request.Options.TryGetValue(KindKey, out var k) ? k : HubRequestKind.Metadata;
        var timeout = kind == HubRequestKind.Download ? options.DownloadTimeout : options.EtagTimeout;
        using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        attempt.CancelAfter(timeout);
        HttpResponseMessage? response = null;
        try
        {
            response = await base.SendAsync(request, attempt.Token);
            if (kind == HubRequestKind.Metadata)
            {
                await response.Content.LoadIntoBufferAsync(attempt.Token);
            }

            return response;
        }
        catch (OperationCanceledException ex) when (attempt.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            response?.Dispose();
            throw new HubAttemptTimeoutException(kind, timeout, ex);
        }
        catch
        {
            response?.Dispose();
            throw;
        }
    }
}
