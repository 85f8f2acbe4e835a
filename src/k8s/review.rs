//! Asking the API server who a caller is (TokenReview) and what they may do
//! (SubjectAccessReview). Does Kubernetes I/O; the token goes into the
//! review's body and nowhere else (never into an error or a log).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Client;
use kube::api::{Api, PostParams};

use super::KubeError;
use crate::rules::auth::{ACCESS_GROUP, ACCESS_RESOURCE, Right, UserInfo, audiences_match};

/// TokenReview of `token`: the user it authenticates, or `None` when the API
/// server does not accept it (bogus, expired, revoked, wrong audience).
pub async fn review_token(
    client: &Client,
    token: &str,
    audiences: &[String],
) -> Result<Option<UserInfo>, KubeError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
        },
        ..TokenReview::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let Some(status) = reviewed.status else {
        return Ok(None);
    };
    if status.authenticated != Some(true)
        || !audiences_match(audiences, status.audiences.as_deref().unwrap_or_default())
    {
        return Ok(None);
    }
    Ok(status.user.and_then(|user| {
        let username = user.username.filter(|u| !u.is_empty())?;
        Some(UserInfo {
            username,
            uid: user.uid.filter(|u| !u.is_empty()),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        })
    }))
}

/// SubjectAccessReview: whether `user` holds `right`.
pub async fn review_access(client: &Client, user: &UserInfo, right: &Right) -> Result<bool, KubeError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: Some(user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(ACCESS_GROUP.to_owned()),
                resource: Some(ACCESS_RESOURCE.to_owned()),
                verb: Some(right.verb.as_str().to_owned()),
                namespace: right.namespace.clone(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviewed = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(reviewed.status.is_some_and(|s| s.allowed))
}
